// The flowfed dashboard: hash routes, one render function per page, no build step.
import { api, optional, token, enc, ApiError, setPageSignal } from "./api.js";
import { drawGraph, foldVersions } from "./graph.js";
import { jsonPreview } from "./charts.js";
import { runPage } from "./run.js";
import { taskPage } from "./task.js";
import {
  badge, dur, empty, esc, main, num, plural, problemHtml, set, short, spanOf, toast, variantText, when,
} from "./util.js";

let cleanup = [];
const onLeave = (fn) => cleanup.push(fn);

// ---------------------------------------------------------------- routing
const routes = [
  [/^#\/signin$/, signIn],
  [/^#\/flows$/, flowsPage],
  [/^#\/templates\/([^/]+)$/, templatePage],
  [/^#\/flows\/new$/, (m) => editPage(null)],
  [/^#\/flows\/([^/]+)\/edit$/, (m) => editPage(decodeURIComponent(m[1]))],
  [/^#\/flows\/([^/]+)$/, (m) => flowPage(decodeURIComponent(m[1]))],
  [/^#\/runs$/, runsPage],
  [/^#\/runs\/([^/]+)$/, (m) => runPage(m[1], onLeave)],
  [/^#\/tasks\/([^/]+)$/, (m) => taskPage(m[1], pageAbort.signal, onLeave)],
  [/^#\/artifacts$/, artifactsPage],
  [/^#\/artifacts\/(.+)$/, (m) => artifactPage(decodeURIComponent(m[1]))],
  [/^#\/nodes$/, nodesPage],
  [/^#\/models$/, modelsPage],
  [/^#\/triggers$/, triggersPage],
  [/^#\/triggers\/([^/]+)$/, (m) => triggerPage(decodeURIComponent(m[1]))],
];

let pageAbort = null;

async function route() {
  for (const fn of cleanup.splice(0)) fn();
  pageAbort?.abort();
  const abort = (pageAbort = new AbortController());
  setPageSignal(abort.signal);
  let hash = location.hash || "#/flows";
  if (!token.get() && hash !== "#/signin") { location.hash = "#/signin"; return; }
  document.querySelectorAll("#nav a").forEach((a) => {
    const on = hash.startsWith(a.getAttribute("href"));
    if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
  renderWho();
  for (const [re, page] of routes) {
    const m = hash.match(re);
    if (m) {
      try { await page(m); } catch (e) {
        if (abort.signal.aborted || (e instanceof ApiError && e.status === 401)) return;
        main.innerHTML = `<h1>Something went wrong</h1>${problemHtml(e)}`;
      }
      if (!abort.signal.aborted) main.focus({ preventScroll: true });
      return;
    }
  }
  notFound(hash);
}

function renderWho() {
  const who = document.getElementById("who");
  who.innerHTML = token.get() ? `<button class="secondary" id="signout">Sign out</button>` : "";
  document.getElementById("signout")?.addEventListener("click", () => { token.clear(); location.hash = "#/signin"; });
}

/** An address no page answers: say which, and offer the way back. */
function notFound(hash) {
  set(`<div class="card not-found"><h1>Page not found</h1><p>Nothing lives at <code>${esc(hash)}</code>.</p>
    <p><a class="button" href="#/flows">Back to flows</a> <a class="button secondary" href="#/runs">See the runs</a></p></div>`, "Not found");
}

// ---------------------------------------------------------------- sign in
async function signIn() {
  set(`<div class="signin card"><h1>Sign in</h1>
    <p class="muted">Paste an API token (<code>flowfed auth token create</code>). It is kept for this tab only.</p>
    <form id="f"><label for="tok">API token</label>
    <input id="tok" name="token" type="password" autocomplete="off" required>
    <div id="err" class="field-error" role="alert"></div>
    <p><button type="submit">Sign in</button></p></form></div>`, "Sign in");
  document.getElementById("f").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    token.set(document.getElementById("tok").value.trim());
    try {
      await api("/api/v1/me");
      location.hash = "#/flows";
    } catch (e) {
      token.clear();
      document.getElementById("err").textContent = e.status === 401 ? "That token is not valid." : e.message;
    }
  });
  document.getElementById("tok").focus();
}

// ---------------------------------------------------------------- flows
async function flowsPage() {
  const [flows, templates] = await Promise.all([api("/api/v1/flows"), optional("/api/v1/templates")]);
  const tpl = (templates?.items || []).map((t) => `<div class="card"><h3>${esc(t.title)}</h3>
    <p class="muted">${esc(t.description)}</p><p class="muted">${t.steps.map(esc).join(" → ")}</p>
    <a class="button" href="#/templates/${enc(t.id)}" aria-label="Use template: ${esc(t.title)}">Use template</a></div>`).join("");
  const rows = flows.map((f) => `<tr><td><a href="#/flows/${enc(f.name)}">${esc(f.name)}</a></td>
    <td>v${f.version}</td><td>${esc(f.description || "")}</td><td>${f.steps}</td><td>${when(f.created_at)}</td></tr>`).join("");
  set(`<div class="row spread"><h1>Flows</h1><a class="button secondary" href="#/flows/new">New flow from YAML</a></div>
    ${flows.length ? `<div class="table-wrap"><table><thead><tr><th>Name</th><th>Version</th><th>Description</th><th>Steps</th><th>Created</th></tr></thead><tbody>${rows}</tbody></table></div>`
      : empty("flows", "Start from a template below, or write one in YAML.")}
    <h2>Templates</h2><div class="grid">${tpl || empty("templates", "This server has none.")}</div>`, "Flows");
}

function fieldHtml(key, p) {
  const id = `p-${key}`;
  const hint = p.description ? `<span class="hint"> — ${esc(p.description)}</span>` : "";
  const label = `<label for="${id}">${esc(p.title || key)}${hint}</label>`;
  const def = p.default;
  if (p.enum) {
    return label + `<select id="${id}" name="${esc(key)}">${p.enum.map((v) => `<option ${v === def ? "selected" : ""}>${esc(v)}</option>`).join("")}</select>`;
  }
  if (p.type === "boolean") {
    return `<label><input type="checkbox" id="${id}" name="${esc(key)}" ${def ? "checked" : ""} style="width:auto"> ${esc(p.title || key)}</label>`;
  }
  if (p.type === "array") {
    return label + `<textarea id="${id}" name="${esc(key)}" rows="3" aria-describedby="${id}-h">${esc((def || []).join("\n"))}</textarea><span class="hint" id="${id}-h">One per line.</span>`;
  }
  const num = p.type === "integer" || p.type === "number";
  const attrs = [num ? `type="number" step="${p.type === "integer" ? 1 : "any"}"` : `type="text"`,
    p.minimum !== undefined ? `min="${p.minimum}"` : "", p.maximum !== undefined ? `max="${p.maximum}"` : "",
    p.minLength ? "required" : ""].join(" ");
  return label + `<input id="${id}" name="${esc(key)}" ${attrs} value="${esc(def ?? "")}">`;
}

function readField(form, key, p) {
  const el = form.elements[key];
  if (p.type === "boolean") return el.checked;
  if (p.type === "array") return el.value.split("\n").map((s) => s.trim()).filter(Boolean);
  if (p.type === "integer") return parseInt(el.value, 10);
  if (p.type === "number") return parseFloat(el.value);
  return el.value;
}

async function templatePage(m) {
  const [t, nodes] = await Promise.all([api(`/api/v1/templates/${m[1]}`), optional("/api/v1/nodes").catch(() => null)]);
  const props = t.schema.properties;
  // Dataset fields list what the nodes hold, when a nodes service answers.
  const known = (nodes?.items || []).flatMap((n) => (n.datasets || []).map((d) => `${n.name}:${d.name}${n.online ? "" : " (offline)"}`));
  set(`<p><a href="#/flows">← Flows</a></p><h1>${esc(t.title)}</h1><p class="muted">${esc(t.description)}</p>
    <div class="card"><form id="f" novalidate>${Object.entries(props).map(([k, p]) => fieldHtml(k, p) + (k === "datasets" && known.length ? `<p class="hint">Datasets on the nodes: ${known.map(esc).join(", ")}</p>` : "")).join("")}
    <div id="err"></div><p><button type="submit">Create flow</button></p></form></div>
    <h2>Steps</h2><div id="steps-graph"></div>`, t.title);
  drawFlowGraph(t.flow);
  document.getElementById("f").addEventListener("input", (ev) => {
    // Editing a field withdraws the complaint about it.
    ev.target.removeAttribute("aria-invalid");
    if (ev.target.nextElementSibling?.classList.contains("inline")) ev.target.nextElementSibling.remove();
  });
  document.getElementById("f").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const values = {};
    for (const [k, p] of Object.entries(props)) values[k] = readField(ev.target, k, p);
    try {
      const made = await api(`/api/v1/templates/${m[1]}/flows`, { method: "POST", body: values });
      toast(`Created ${made.name} v${made.version}`);
      location.hash = `#/flows/${enc(made.name)}`;
    } catch (e) {
      document.getElementById("err").innerHTML = problemHtml(e);
      // Each bad field also says so itself, for whoever tabs back to it.
      ev.target.querySelectorAll(".field-error.inline").forEach((x) => x.remove());
      ev.target.querySelectorAll("[aria-invalid]").forEach((x) => x.removeAttribute("aria-invalid"));
      for (const item of e.errors || []) {
        const el = item.field in props && ev.target.elements[item.field];
        if (!el || !el.insertAdjacentHTML) continue;
        el.setAttribute("aria-invalid", "true");
        el.insertAdjacentHTML("afterend", `<div class="field-error inline">✗ ${esc(item.message)}</div>`);
      }
    }
  });
}

/** The steps as a graph: an edge wherever one step's output is another's input. */
function drawFlowGraph(spec) {
  const steps = spec.steps || [];
  // A step that holds several tools (`tools:`) consumes and produces what its tools do.
  const parts = (s) => s.tools || [s];
  const producer = new Map();
  for (const s of steps) {
    for (const p of parts(s)) {
      const outs = Array.isArray(p.outputs) ? p.outputs : Object.values(p.outputs || {});
      for (const o of outs) producer.set(o, s.name);
    }
  }
  const edges = [];
  const seen = new Set();
  for (const s of steps) {
    for (const art of parts(s).flatMap((p) => Object.values(p.inputs || {}))) {
      const from = producer.get(art);
      if (from !== undefined && from !== s.name && !seen.has(`${from}\0${s.name}\0${art}`)) {
        seen.add(`${from}\0${s.name}\0${art}`);
        edges.push({ from, to: s.name, label: art });
      }
    }
    const next = s.next;
    for (const target of next ? [next.success, next.failure, next.otherwise] : []) {
      if (target && target !== "end") edges.push({ from: s.name, to: target, label: "next" });
    }
  }
  const nodes = steps.map((s) => ({ id: s.name, label: s.name, sub: s.tools ? `${s.tools.length} tools` : s.tool }));
  const box = document.getElementById("steps-graph");
  return box ? drawGraph(box, nodes, edges, `Steps of ${spec.name}`) : null;
}

async function flowPage(name) {
  const [flow, versions, runs] = await Promise.all([
    api(`/api/v1/flows/${enc(name)}`), api(`/api/v1/flows/${enc(name)}/versions`),
    api(`/api/v1/runs?flow=${enc(name)}&limit=20`),
  ]);
  const config = Object.entries(flow.spec.config || {});
  set(`<p><a href="#/flows">← Flows</a></p>
    <div class="row spread"><h1>${esc(flow.name)} <span class="muted">v${flow.version}</span></h1>
    <div class="row"><button id="start">Start run</button><a class="button secondary" href="#/flows/${enc(name)}/edit">Edit YAML</a></div></div>
    <div id="err"></div>
    ${flow.description ? `<p>${esc(flow.description)}</p>` : ""}
    <h2>Steps</h2><div id="steps-graph"></div>
    ${config.length ? `<h2>Config</h2><dl class="kv card">${config.map(([k, v]) => `<dt>${esc(k)}</dt><dd class="mono">${esc(JSON.stringify(v))}</dd>`).join("")}</dl>` : ""}
    <h2>Runs</h2>${runsTable(runs.items)}
    <h2>Versions</h2><div class="table-wrap"><table><thead><tr><th>Version</th><th>Created</th><th>Steps</th></tr></thead><tbody>
    ${versions.slice().reverse().map((v) => `<tr><td>v${v.version}</td><td>${when(v.created_at)}</td><td>${v.steps}</td></tr>`).join("")}</tbody></table></div>`, flow.name);
  drawFlowGraph(flow.spec);
  document.getElementById("start").addEventListener("click", async () => {
    try {
      const r = await api("/api/v1/runs", { method: "POST", body: { flow: name } });
      location.hash = `#/runs/${r.run_id}`;
    } catch (e) { document.getElementById("err").innerHTML = problemHtml(e); }
  });
}

// ---------------------------------------------------------------- YAML editor
async function editPage(name) {
  let source = "name: My flow\nsteps:\n  - name: load\n    tool: flowfed.sklearn_dataset\n    params: {name: breast_cancer}\n    outputs: [raw]\n";
  if (name) source = (await api(`/api/v1/flows/${enc(name)}`)).source || source;
  set(`<p><a href="${name ? `#/flows/${enc(name)}` : "#/flows"}">← Back</a></p>
    <h1>${name ? `Edit ${esc(name)}` : "New flow"}</h1>
    <div class="editor"><pre class="gutter" id="gutter" aria-hidden="true"></pre>
    <textarea id="yaml" spellcheck="false" aria-label="Flow YAML" aria-describedby="problems">${esc(source)}</textarea>
    <div class="marks" id="marks"></div></div>
    <div class="row" style="margin-top:10px"><button id="validate" class="secondary">Validate</button><button id="save">Save as new version</button></div>
    <div id="problems" aria-live="polite"></div>`, name ? `Edit ${name}` : "New flow");
  const ta = document.getElementById("yaml"), gutter = document.getElementById("gutter"), marks = document.getElementById("marks");
  let errors = [];
  const draw = () => {
    const n = ta.value.split("\n").length;
    const bad = new Map(errors.filter((e) => e.line).map((e) => [e.line, e]));
    gutter.innerHTML = Array.from({ length: n }, (_, i) => bad.has(i + 1)
      ? `<span class="err" data-line="${i + 1}" title="${esc(bad.get(i + 1).message)}">! ${i + 1}</span>` : `${i + 1}\n`).join("");
    marks.innerHTML = [...bad.values()].map((e) => `<div class="mark" data-line="${e.line}" style="top:${8 + (e.line - 1) * 20 - ta.scrollTop}px">line ${e.line}: ${esc(e.message)}</div>`).join("");
    gutter.scrollTop = ta.scrollTop;
  };
  ta.addEventListener("input", () => { errors = []; draw(); });
  ta.addEventListener("scroll", draw);
  draw();
  const report = (e) => {
    errors = e.errors || [];
    document.getElementById("problems").innerHTML = `<div class="card field-error" role="alert"><strong>${esc(e.message)}</strong><ul class="errors">${errors.map((x) =>
      `<li>${x.line ? `<button class="secondary goto" data-line="${x.line}">line ${x.line}</button> ` : ""}${esc(x.message)}${x.hint ? ` <span class="muted">(${esc(x.hint)})</span>` : ""}</li>`).join("")}</ul></div>`;
    document.querySelectorAll(".goto").forEach((b) => b.addEventListener("click", () => {
      const line = +b.dataset.line, lines = ta.value.split("\n");
      const start = lines.slice(0, line - 1).join("\n").length + (line > 1 ? 1 : 0);
      ta.focus(); ta.setSelectionRange(start, start + lines[line - 1].length);
      ta.scrollTop = Math.max(0, (line - 5) * 20); draw();
    }));
    draw();
  };
  document.getElementById("validate").addEventListener("click", async () => {
    try {
      const ok = await api("/api/v1/flows/validate", { method: "POST", body: { source: ta.value, format: "yaml" } });
      errors = []; draw();
      document.getElementById("problems").innerHTML = `<div class="card" role="status">✓ Valid: ${plural(ok.tasks.length, "task")} planned.</div>`;
    } catch (e) { report(e); }
  });
  document.getElementById("save").addEventListener("click", async () => {
    try {
      const made = await api("/api/v1/flows", { method: "POST", body: { source: ta.value, format: "yaml" } });
      toast(`Saved ${made.name} v${made.version}`);
      location.hash = `#/flows/${enc(made.name)}`;
    } catch (e) { report(e); }
  });
}

// ---------------------------------------------------------------- runs
function runsTable(items) {
  if (!items.length) return empty("runs", "Start one from a flow's page.");
  // Duration: the server's `duration_s`, else start to end (to now while it runs).
  const took = (r) => {
    if (r.ended_at == null && r.status !== "running") return r.duration_s != null ? dur(r.duration_s) : "—";
    const d = dur(spanOf(r));
    return d ? (r.ended_at == null ? `${d} so far` : d) : "—";
  };
  return `<div class="table-wrap"><table class="runs"><thead><tr><th>Run</th><th>Flow</th><th>Status</th><th>Started</th><th>Ended</th><th>Duration</th></tr></thead><tbody>
    ${items.map((r) => `<tr data-run="${esc(r.id)}"><td><a href="#/runs/${r.id}" class="mono">${short(r.id)}</a>${r.retry_of ? ` <span class="muted">retry of <a class="mono" href="#/runs/${esc(r.retry_of)}">${short(r.retry_of)}</a></span>` : ""}${r.trigger ? ` <span class="muted">by trigger <a href="#/triggers/${enc(r.trigger)}">${esc(r.trigger)}</a></span>` : ""}</td><td>${esc(r.flow_name)}</td>
    <td>${badge(r.status)}</td><td>${when(r.created_at)}</td><td>${when(r.ended_at)}</td><td class="nowrap duration">${esc(took(r))}</td></tr>`).join("")}</tbody></table></div>`;
}

async function runsPage() {
  const runs = await api("/api/v1/runs?limit=50");
  set(`<h1>Runs</h1>${runsTable(runs.items)}`, "Runs");
}

// ---------------------------------------------------------------- artifacts
async function artifactsPage() {
  const q = new URLSearchParams(location.hash.split("?")[1] || "");
  set(`<h1>Artifacts</h1><form id="f" class="row" role="search"><label for="q" style="margin:0">Name</label>
    <input id="q" name="name" style="max-width:280px" value="${esc(q.get("name") || "")}"><button>Search</button></form><div id="list"></div>`, "Artifacts");
  const load = async (name) => {
    const items = await api(`/api/v1/artifacts?limit=100${name ? `&name=${enc(name)}` : ""}`);
    const list = Array.isArray(items) ? items : items.items || [];
    document.getElementById("list").innerHTML = list.length ? `<div class="table-wrap"><table><thead><tr><th>Name</th><th>Version</th><th>Kind</th><th>Step</th><th>Node</th><th>Run</th><th>Hash</th></tr></thead><tbody>
      ${list.map((a) => `<tr><td><a href="#/artifacts/${enc(a.id)}">${esc(a.name)}</a></td><td>${a.version}</td><td>${esc(a.kind)}</td><td>${esc(a.step)}</td><td>${esc(a.node)}</td>
      <td><a class="mono" href="#/runs/${a.run_id}">${short(a.run_id)}</a></td><td class="mono">${esc(a.hash.slice(0, 12))}</td></tr>`).join("")}</tbody></table></div>` : empty("artifacts", name ? `Nothing named "${name}".` : "Runs record their outputs here.");
  };
  document.getElementById("f").addEventListener("submit", (ev) => { ev.preventDefault(); load(document.getElementById("q").value.trim()); });
  await load(q.get("name"));
}

async function artifactPage(ref) {
  const [a, lineage] = await Promise.all([api(`/api/v1/artifacts/${enc(ref)}`), api(`/api/v1/artifacts/${enc(ref)}/lineage`)]);
  const nodes = [], edges = [], seen = new Set();
  const walk = (n) => {
    if (seen.has(n.id)) return;
    seen.add(n.id);
    nodes.push({ id: n.id, name: n.missing ? null : n.name, version: n.version, label: n.missing ? `${short(n.id)} (missing)` : `${n.name} v${n.version}`, sub: n.step || n.producer?.step || "", href: n.missing ? null : `#/artifacts/${enc(n.id)}` });
    for (const p of n.parents || []) { edges.push({ from: p.id, to: n.id }); walk(p); }
  };
  walk(lineage);
  // Round artifacts fold into one box ("global_model v1…v30"); the artifact itself stays.
  const { nodes: graphNodes, edges: graphEdges } = foldVersions(nodes, edges, { keep: lineage.id });
  set(`<p><a href="#/artifacts">← Artifacts</a></p><h1>${esc(a.name)} <span class="muted">v${a.version}</span></h1>
    <dl class="kv card"><dt>Hash</dt><dd class="mono">${esc(a.hash)}</dd><dt>Size</dt><dd>${a.size} bytes</dd>
    <dt>Kind</dt><dd>${esc(a.kind)} (${esc(a.type_name)})</dd><dt>Produced by</dt><dd>${esc(a.producer?.step || a.step)} · ${esc(a.producer?.tool || "")} · <a href="#/tasks/${a.task_id}">task ${short(a.task_id)}</a></dd>
    <dt>Run</dt><dd><a href="#/runs/${a.run_id}">${short(a.run_id)}</a></dd><dt>Node</dt><dd>${esc(a.node)}</dd>
    <dt>Shareable</dt><dd>${a.shareable ? "yes" : "no (stays on its node)"}</dd>
    ${a.meta ? `<dt>Meta</dt><dd class="mono">${esc(JSON.stringify(a.meta))}</dd>` : ""}</dl>
    <h2>Lineage</h2><p class="muted">From the sources (left) to this artifact (right).</p>
    <div id="lineage"></div><div id="preview"></div>`, a.name);
  drawGraph(document.getElementById("lineage"), graphNodes, graphEdges, `Lineage of ${a.name}`);
  // A dict artifact (kind json, such as a flow's report) is previewed as indented JSON.
  if (a.kind === "json" && a.shareable) {
    const value = await api(`/api/v1/artifacts/${enc(a.id)}/content`).catch(() => null);
    if (value !== null && typeof value === "object" && document.getElementById("preview")) {
      document.getElementById("preview").innerHTML = `<h2>Preview</h2>${jsonPreview(value)}`;
    }
  }
}

// ---------------------------------------------------------------- nodes, models, triggers
const NODES_REFRESH_MS = 3000; // the nodes page re-reads the list this often while shown

function nodeCard(n) {
  const ds = n.datasets || [];
  // The state is a word beside its icon (never colour alone), also in the card's label.
  return `<section class="card node" data-node="${esc(n.name)}" aria-label="Node ${esc(n.name)}, ${n.online ? "online" : "offline"}">
    <div class="row spread"><h2 style="margin:0">${esc(n.name)}</h2><span class="node-state">${badge(n.online ? "online" : "offline")}</span></div>
    <p class="muted">${n.online ? "Online, last heard" : "Offline, last seen"} ${when(n.last_seen)} · ${n.running ?? 0} running · ${ds.length} dataset${ds.length === 1 ? "" : "s"}</p>
    ${ds.length ? `<div class="table-wrap"><table class="datasets"><caption class="sr">Datasets on ${esc(n.name)}</caption><thead><tr><th>Dataset</th><th>Format</th><th>Rows</th><th>Columns</th><th>Hash</th></tr></thead><tbody>
    ${ds.map((d) => `<tr><td>${esc(d.name)}</td><td>${esc(d.format)}</td><td>${d.rows ?? "—"}</td><td>${(d.columns || []).map((c) => `${esc(c.name)} <span class="muted">${esc(c.dtype)}</span>`).join(", ")}</td><td class="mono" title="${esc(d.hash)}">${esc(String(d.hash || "").slice(0, 12))}</td></tr>`).join("")}</tbody></table></div>`
    : `<p class="muted">No datasets registered.</p>`}</section>`;
}

async function nodesPage() {
  const load = async () => (await optional("/api/v1/nodes"))?.items ?? null;
  let items = await load();
  set(`<div class="row spread"><h1>Nodes</h1><button class="secondary" id="refresh">Refresh</button></div>
    <p class="muted" id="nodes-summary" role="status"></p><div id="nodes"></div>`, "Nodes");
  let drawn = null;
  const draw = () => {
    const key = JSON.stringify(items);
    if (key === drawn) return; // unchanged: keep the DOM (and whatever has focus) as it is
    drawn = key;
    const list = items || [];
    const online = list.filter((n) => n.online).length;
    document.getElementById("nodes-summary").textContent = list.length
      ? `${list.length} node${list.length === 1 ? "" : "s"}: ${online} online, ${list.length - online} offline.` : "";
    document.getElementById("nodes").innerHTML = list.length ? list.map(nodeCard).join("")
      : items === null ? empty("nodes", "This server does not serve nodes.")
      : empty("nodes", "Start a node agent at a site to see it here with its datasets.");
  };
  draw();
  // Sites come and go while the page is open: re-read the list (there is no node stream).
  const refresh = async () => {
    try { items = await load(); draw(); } catch (e) {
      if (e.name !== "AbortError" && e.status !== 401) {
        document.getElementById("nodes-summary").textContent = `Could not refresh: ${e.message}`;
        drawn = null;
      }
    }
  };
  const timer = setInterval(refresh, NODES_REFRESH_MS);
  onLeave(() => clearInterval(timer));
  document.getElementById("refresh").addEventListener("click", refresh);
}


/** One horizontal bar chart: a bar per model, its value written beside it ("—" if none). */
function barChart(name, labels, values) {
  const nums = values.map((v) => (typeof v === "number" && Number.isFinite(v) ? v : null));
  const max = Math.max(1e-12, ...nums.filter((v) => v !== null).map(Math.abs));
  const cut = (s) => (s.length > 22 ? `${s.slice(0, 21)}…` : s);
  const rows = labels.map((label, i) => {
    const v = nums[i], w = v === null ? 0 : (280 * Math.abs(v)) / max, y = i * 26;
    return `<g><title>${esc(label)}: ${v === null ? "no value" : v}</title><text x="4" y="${y + 20}">${esc(cut(label))}</text>
      <rect x="160" y="${y + 8}" height="16" width="${w}" fill="#1f5fbf"/><text x="${166 + w}" y="${y + 20}">${v === null ? "—" : esc(num(v))}</text></g>`;
  }).join("");
  return `<figure class="bars" data-metric="${esc(name)}"><figcaption>${esc(name)}</figcaption>
    <svg class="chart" viewBox="0 0 520 ${labels.length * 26 + 8}" role="img" aria-label="${esc(name)} by model: ${labels.map((l, i) => `${esc(l)} ${nums[i] === null ? "none" : esc(num(nums[i]))}`).join(", ")}">${rows}</svg></figure>`;
}

async function modelsPage() {
  const data = await optional("/api/v1/models");
  const items = data?.items || [];
  const metricsText = (m) => Object.entries(m.metrics || {}).map(([k, v]) => `${esc(k)}: ${esc(num(v))}`).join(", ");
  set(`<h1>Models</h1>${items.length ? `<p class="muted">Every trained model, newest first. A subvariant is one combination of a step's swept params. Tick two or more to compare them.</p>
    <form id="cmp"><div class="table-wrap"><table id="models"><thead><tr><th><span class="sr">Compare</span></th><th>Model</th><th>Version</th><th>Subvariant</th><th>Step</th><th>Metrics</th><th>Run</th><th>Trained</th></tr></thead><tbody>
    ${items.map((m) => `<tr data-model="${esc(m.name)}@${m.version}"><td><input type="checkbox" name="ids" value="${esc(m.artifact_id)}" aria-label="Compare ${esc(m.name)} v${m.version}" style="width:auto"></td>
    <td><a href="#/artifacts/${enc(m.artifact_id)}">${esc(m.name)}</a></td><td>v${esc(m.version)}</td><td class="mono variant">${esc(variantText(m.variant))}</td><td>${esc(m.step)}</td>
    <td class="metrics">${metricsText(m)}</td><td><a class="mono" href="#/runs/${m.run_id}">${short(m.run_id)}</a></td><td>${when(m.created_at)}</td></tr>`).join("")}
    </tbody></table></div><p><button>Compare selected</button></p></form><div id="compare" aria-live="polite"></div>`
    : empty("models", "Trained models are registered here with their metrics.")}`, "Models");
  document.getElementById("cmp")?.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const out = document.getElementById("compare");
    const ids = [...ev.target.querySelectorAll("input:checked")].map((i) => i.value);
    if (ids.length < 2) { out.innerHTML = `<p class="field-error" role="alert">Select two or more models to compare.</p>`; return; }
    let cmp;
    try { cmp = await api(`/api/v1/models/compare?ids=${ids.map(enc).join(",")}`); } catch (e) {
      if (e.name !== "AbortError") out.innerHTML = problemHtml(e);
      return;
    }
    // The server's comparison: the union of metrics and swept params, one value per model.
    const labels = cmp.models;
    const row = (name, vals, fmt) => `<tr><th scope="row">${esc(name)}</th>${vals.map((v) => `<td>${v == null ? "—" : esc(fmt(v))}</td>`).join("")}</tr>`;
    const params = Object.entries(cmp.variants || {});
    const metrics = Object.entries(cmp.metrics || {});
    const charts = metrics.filter(([, vals]) => vals.some((v) => typeof v === "number" && Number.isFinite(v)));
    out.innerHTML = `<h2>Comparison</h2>
      ${cmp.same_sources ? "" : `<p class="card" role="note">⚠ These models derive from different source data: the comparison is between data, not only between settings.</p>`}
      <div class="table-wrap"><table id="cmp-table"><thead><tr><th>Model</th>${labels.map((l) => `<th scope="col">${esc(l)}</th>`).join("")}</tr></thead><tbody>
      ${row("subvariant", cmp.entries.map((e) => variantText(e.variant)), String)}
      ${params.map(([k, vals]) => row(k, vals, (v) => (typeof v === "string" ? v : JSON.stringify(v)))).join("")}
      ${metrics.map(([k, vals]) => row(k, vals, num)).join("")}</tbody></table></div>
      <div class="charts">${charts.map(([k, vals]) => barChart(k, labels, vals)).join("") || `<p class="muted">These models have no numeric metrics to chart.</p>`}</div>`;
  });
}

/** What makes a trigger fire, in a few words: its schedule or its event (and condition). */
function triggerWhen(spec) {
  const s = spec?.schedule, on = spec?.on;
  if (s?.cron) return `cron ${s.cron}${s.timezone ? ` (${s.timezone})` : ""}`;
  if (s?.every != null) return `every ${s.every}${typeof s.every === "number" ? " s" : ""}`;
  if (on) {
    const [kind, filter] = Object.entries(on).find(([, v]) => v != null) || ["event", {}];
    const f = Object.entries(filter || {}).filter(([, v]) => v != null).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join("|") : v}`).join(", ");
    return `on ${kind}${f ? ` (${f})` : ""}${spec.when ? ` when ${spec.when}` : ""}`;
  }
  return "—";
}

// A fire that started a run shows what came of it (`outcome`: the run's status now), not
// only that it started one.
const fireHtml = (f) => (f ? `${badge(f.outcome || f.status)}${f.run_id ? ` <a class="mono" href="#/runs/${f.run_id}">run ${short(f.run_id)}</a>` : ""}` : `<span class="muted">never</span>`);

async function triggersPage() {
  const data = await optional("/api/v1/triggers");
  const items = Array.isArray(data) ? data : data?.items || [];
  set(`<h1>Triggers</h1>${items.length ? `<div class="table-wrap"><table id="triggers"><thead><tr><th>Name</th><th>Flow</th><th>Kind</th><th>Fires</th><th>Enabled</th><th>Next fire</th><th>Last fire</th></tr></thead><tbody>
    ${items.map((t) => `<tr data-trigger="${esc(t.name)}"><td class="nowrap"><a href="#/triggers/${enc(t.name)}">${esc(t.name)}</a></td><td><a href="#/flows/${enc(t.flow)}">${esc(t.flow)}</a>${t.version ? ` v${t.version}` : ""}</td><td>${esc(t.kind)}</td>
    <td class="mono">${esc(triggerWhen(t.spec))}</td><td>${t.enabled === false ? "no" : "yes"}</td><td>${when(t.next_fire_at)}</td>
    <td>${fireHtml(t.last_fire)}${t.last_fire ? ` <span class="muted">${when(t.last_fire.created_at ?? t.last_fired_at)}</span>` : ""}</td></tr>`).join("")}</tbody></table></div>`
    : empty("triggers", "Triggers start flows on a schedule or an event.")}`, "Triggers");
}

async function triggerPage(name) {
  const [t, history] = await Promise.all([api(`/api/v1/triggers/${enc(name)}`), api(`/api/v1/triggers/${enc(name)}/history?limit=100`)]);
  set(`<p><a href="#/triggers">← Triggers</a></p>
    <h1>${esc(t.name)} <span class="muted">${t.enabled === false ? "(disabled)" : ""}</span></h1>
    ${t.spec?.description ? `<p>${esc(t.spec.description)}</p>` : ""}
    <dl class="kv card"><dt>Flow</dt><dd><a href="#/flows/${enc(t.flow)}">${esc(t.flow)}</a>${t.version ? ` v${t.version}` : " (latest version)"}</dd>
    <dt>Kind</dt><dd>${esc(t.kind)}</dd><dt>Fires</dt><dd class="mono">${esc(triggerWhen(t.spec))}</dd>
    <dt>Enabled</dt><dd>${t.enabled === false ? "no" : "yes"}</dd><dt>Next fire</dt><dd>${when(t.next_fire_at)}</dd>
    ${t.spec?.params && Object.keys(t.spec.params).length ? `<dt>Params</dt><dd class="mono">${esc(JSON.stringify(t.spec.params))}</dd>` : ""}
    ${t.spec?.overlap ? `<dt>If still running</dt><dd>${esc(t.spec.overlap)}</dd>` : ""}
    <dt>Created</dt><dd>${when(t.created_at)}</dd></dl>
    <h2>History</h2>${history.length ? `<div class="table-wrap"><table id="history"><thead><tr><th>When</th><th>Status</th><th>Run</th><th>Why / event</th><th>Fire key</th></tr></thead><tbody>
    ${history.map((f) => `<tr data-status="${esc(f.status)}"><td>${when(f.created_at)}${f.catchup ? " (catch-up)" : ""}</td><td>${badge(f.status)}${f.run_status && f.run_status !== f.status ? ` → ${badge(f.run_status)}` : ""}</td>
    <td>${f.run_id ? `<a class="mono" href="#/runs/${f.run_id}">${short(f.run_id)}</a>` : "—"}</td>
    <td>${f.reason ? esc(f.reason) : `<span class="muted">${esc(f.event?.kind || "")}</span>`}</td><td class="mono">${esc(f.fire_key)}</td></tr>`).join("")}</tbody></table></div>`
    : `<p class="muted" id="history">Not fired yet.</p>`}`, t.name);
}

// The skip link moves focus to the content without touching the hash: "#main" is not a
// route, and following it as one would replace the page with "Not found".
document.querySelector(".skip")?.addEventListener("click", (ev) => { ev.preventDefault(); main.focus(); });
window.addEventListener("hashchange", route);
route();
