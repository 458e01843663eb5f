// The run monitor (seed 000's live tree, the federated panel, the timeline, the results).
import { api, enc } from "./api.js";
import { RunStream } from "./live.js";
import { jsonPreview } from "./charts.js";
import { fedPanel, gantt, participantOf, resultsTables, roundProgress } from "./fed.js";
import {
  badge, clock, dur, esc, num, plural, problemHtml, resourcesText, RUN_ENDED, set, short, spanOf,
  TERMINAL, toast, variantText, when,
} from "./util.js";

const COLLAPSE_AT = 50; // tasks shown per step until "show all"
// A running step with no event for this long says "stalled" (when the server does not say).
const STALL_S = 120;
// While the run goes on, the server's own view (waiting_on, stalled, progress, resources)
// is re-read this often; events carry everything else as it happens.
const POLL_MS = 4000;

const RESOURCE_KEYS = ["wall_s", "cpu_s", "peak_rss_mb", "progress"];
const pick = (o, keys) => Object.fromEntries(keys.filter((k) => o[k] !== undefined).map((k) => [k, o[k]]));

/** The task's fields the page keeps, from a REST row or the first event naming it. */
const taskModel = (t) => ({
  id: t.id, step: t.step, tool: t.tool, label: t.label, node: t.node, round: t.round, plan_key: t.plan_key,
  dataset: t.dataset, variant: t.variant, state: t.state, metrics: { ...(t.metrics || {}) }, progress: t.progress,
  attempt: t.attempt, error: t.error?.message, started_at: t.started_at, ended_at: t.ended_at,
  duration_s: t.duration_s, resources: t.resources ?? null, waiting_on: t.waiting_on ?? null,
});

/** The live tree of seed 000: steps with state and progress, tasks under each. */
export async function runPage(runId, onLeave) {
  let run = await api(`/api/v1/runs/${runId}`);
  const steps = new Map(); // name -> {name, status, tasks: Map, el, expanded, rest, lastEvent}
  const tasks = new Map(); // id -> task model
  const order = (run.spec.steps || []).map((s) => s.name);
  const stepOf = (name) => steps.get(name) || steps.set(name, { name, status: "pending", tasks: new Map(), expanded: false, rest: {} }).get(name);
  for (const s of run.steps) Object.assign(stepOf(s.name), { status: s.status, rest: s });
  for (const n of order) stepOf(n);
  const addTask = (t) => {
    const model = taskModel(t);
    tasks.set(t.id, model); stepOf(t.step).tasks.set(t.id, model);
    return model;
  };
  for (const t of run.tasks) addTask(t);
  let status = run.status;
  const config = { ...(run.spec?.config || {}), ...(run.params || {}) };
  const specSteps = new Map((run.spec?.steps || []).map((s) => [s.name, s]));
  // "Round r/R": R is the step's `federated.rounds` (often "${config.rounds}"), else the
  // flow config's `rounds` as seed 000's flows have it; run params override the config.
  const roundsOf = (step) => {
    let r = specSteps.get(step)?.federated?.rounds;
    const ref = typeof r === "string" && r.match(/^\$\{config\.([\w-]+)\}$/);
    if (ref) r = config[ref[1]];
    if (r == null || typeof r === "string" && r.includes("${")) r = config.rounds;
    const n = Number(r);
    return Number.isInteger(n) && n > 0 ? n : null;
  };
  const trigger = run.trigger && (typeof run.trigger === "string" ? run.trigger : run.trigger.name);
  const origin = [run.retry_of ? `retry of <a class="mono" id="retry-of" href="#/runs/${esc(run.retry_of)}">run ${short(run.retry_of)}</a>` : "",
    trigger ? `started by trigger <a id="started-by" href="#/triggers/${enc(trigger)}">${esc(trigger)}</a>` : ""].filter(Boolean).join(" · ");

  set(`<p><a href="#/runs">← Runs</a></p>
    <div class="row spread"><h1>${esc(run.flow_name)}${run.spec?.type && run.spec.type !== "pipeline" ? ` <span class="flow-type muted">${esc(run.spec.type)}</span>` : ""} <span id="run-status">${badge(status)}</span></h1>
    <div class="row"><button id="cancel" class="danger">Cancel run</button><button id="retry" class="secondary">Retry run</button></div></div>
    <p class="muted">Run <span class="mono">${esc(run.id)}</span> · started ${when(run.created_at)} · <span id="run-duration"></span>${origin ? ` · <span id="run-origin">${origin}</span>` : ""} · <span class="conn" id="conn" role="status">connecting…</span></p>
    <div id="err"></div><div id="run-error"></div>
    <ul class="tree" id="tree" aria-label="Steps and their tasks"></ul>
    <div id="fed"></div>
    <section id="timeline-section"><h2>Timeline</h2><p class="muted">One row per node; each bar a task from its start to its end.</p><div id="timeline"></div></section>
    <section id="results-section" hidden><h2>Results</h2><div id="results"></div><div id="report"></div></section>`, `Run ${short(run.id)}`);
  const tree = document.getElementById("tree");

  // One line per task, as in seed 000's monitor: "hospital-a · Round 17/30 · loss 0.21".
  const taskRow = (t, where = t.node) => {
    const rounds = roundsOf(t.step);
    const latest = Object.entries(t.metrics || {});
    // Loss while training, accuracy once evaluated, else whatever the tool reported last.
    const key = ["loss", "accuracy", "roc_auc"].find((k) => t.metrics?.[k] !== undefined);
    const shown = key ? [key, t.metrics[key]] : latest[latest.length - 1];
    const metric = t.state === "running" && t.message ? t.message
      : shown ? `${shown[0]} ${num(shown[1])}`
      : t.progress != null && !TERMINAL.has(t.state) ? `${Math.round(t.progress * 100)}%` : "";
    const parts = [where, t.variant && Object.keys(t.variant).length ? `[${variantText(t.variant)}]` : "",
      t.round != null ? `Round ${t.round}${rounds ? `/${rounds}` : ""}` : ""]
      .filter((x) => x !== "" && x != null).map(esc);
    const w = t.waiting_on;
    if (w && !TERMINAL.has(t.state)) parts.push(`<span class="waiting">waiting for ${esc(w.node)}${w.offline_since ? ` (offline since ${esc(clock(w.offline_since))})` : ""}</span>`);
    else if (t.state === "error" && t.error) parts.push(`<span class="field-error" title="${esc(t.error)}">${esc(t.error)}</span>`);
    else if (metric) parts.push(esc(metric));
    const attempt = t.attempt > 1 ? ` (attempt ${t.attempt})` : "";
    const left = t.node && t.node !== "local" ? ` title="open: what left node ${esc(t.node)}" data-egress="#/tasks/${t.id}#egress"` : "";
    const words = t.label ? t.label.replace(/ \([^()]*\)$/, "") : t.tool;
    const d = t.started_at != null || t.duration_s != null ? dur(spanOf(t)) : "";
    return `<a href="#/tasks/${t.id}"${left}${t.label && !left ? ` title="${esc(t.label)} · ${esc(t.tool)}"` : ""}>${esc(words)}${attempt}</a><span class="info">${parts.join(" · ") || "—"}</span><span class="res">${esc(resourcesText(t.resources))}</span><span class="dur">${esc(d)}</span><span>${badge(t.state)}</span>`;
  };
  const retried = (t, list) => list.some((o) => o !== t && o.step === t.step && o.attempt > t.attempt
    && (o.plan_key && t.plan_key ? o.plan_key === t.plan_key : o.node === t.node && o.round === t.round));
  // A federated step is judged by its own task (the one that ends with the global model):
  // a participant dropped from a round ends `cancelled` or `error` without failing it.
  const stepStatus = (s, own) => {
    const list = own?.length ? own : [...s.tasks.values()];
    if (!list.length) return RUN_ENDED.has(status) && status !== "success" && s.rest?.status ? s.rest.status : s.status;
    if (list.some((t) => t.state === "error" && !retried(t, list))) return status === "running" ? "running" : "failed";
    if (list.every((t) => TERMINAL.has(t.state))) return list.some((t) => t.state === "cancelled") ? "cancelled" : list.every((t) => t.state === "skipped") ? "skipped" : "completed";
    return list.some((t) => t.state !== "pending") ? "running" : "pending";
  };
  // A step of several tools (`tools:`) is not done while one of them has no task yet.
  const toolsWaiting = (s) => {
    const tools = specSteps.get(s.name)?.tools;
    if (!Array.isArray(tools) || RUN_ENDED.has(status)) return 0;
    const keys = [...s.tasks.values()].map((t) => t.plan_key || "");
    return tools.filter((p) => {
      const n = `${s.name}/${p.name || String(p.tool).split("@")[0].split(".").pop()}`;
      return !keys.some((k) => k === n || k.startsWith(`${n}[`) || k.startsWith(`${n}/`));
    }).length;
  };
  // A step's span: its first task's start to its last task's end (to now while open),
  // from the tasks as events update them; the server's times when no task has any.
  const stepSpan = (s, list) => {
    const starts = list.map((t) => t.started_at).filter((x) => x != null);
    if (!starts.length) return s.rest?.started_at != null ? spanOf({ ...s.rest, live: !RUN_ENDED.has(status) }) : null;
    const ends = list.map((t) => t.ended_at);
    const open = ends.some((e) => e == null) && !RUN_ENDED.has(status);
    return (open ? Date.now() / 1000 : Math.max(...ends.filter((e) => e != null), ...starts)) - Math.min(...starts);
  };
  const renderStep = (s) => {
    window.__flowfedRenders = (window.__flowfedRenders || 0) + 1;
    if (!s.el) {
      s.el = document.createElement("li");
      s.el.className = "step";
      s.el.dataset.step = s.name;
      tree.append(s.el);
    }
    const list = [...s.tasks.values()];
    // A federated step: its own task(s), then each participant's latest round (the
    // aggregator is one too), after a count of the earlier rounds' tasks.
    const latest = new Map();
    for (const t of list) {
      const key = participantOf(t);
      if (key === null) continue;
      const cur = latest.get(key);
      if (!cur || t.round > cur.round || (t.round === cur.round && t.attempt >= cur.attempt)) latest.set(key, t);
    }
    const federated = latest.size > 0;
    const own = federated ? list.filter((t) => participantOf(t) === null) : null;
    // Done means done: a task that failed, was skipped or cancelled does not fill the bar.
    const done = list.filter((t) => t.state === "finished" || t.state === "cached").length;
    const waiting = toolsWaiting(s);
    let st = stepStatus(s, own);
    if (waiting && (st === "completed" || st === "pending")) st = list.length ? "running" : "pending";
    s.status = st;
    // Honest progress: rounds done over rounds for a federated step, else tasks ended over tasks.
    const given = s.rest?.progress;
    // Rounds counted from the tasks as their events arrive (the server's count when the
    // page has no round tasks); a step's tasks: finished over all, so a failed step's bar
    // holds what finished.
    const rp = federated ? roundProgress(list, roundsOf(s.name) ?? given?.total, null) ?? (given?.unit === "rounds" ? given : null)
      : given?.total && given.unit && given.unit !== "tasks" ? given : null;
    const pct = rp ? Math.round((100 * rp.done) / rp.total)
      : list.length ? Math.round((100 * done) / (list.length + waiting)) : (st === "completed" ? 100 : 0);
    const ofWhat = rp ? `${rp.done}/${rp.total} ${rp.unit || "rounds"}` : list.length && st !== "running" && st !== "pending" ? `${done}/${plural(list.length + waiting, "task")}` : `${pct}%`;
    // Stalled: the server says so, or a running step heard nothing for STALL_S.
    const stalled = st === "running" && (s.rest?.stalled === true || (s.rest?.stalled == null && s.lastEvent && Date.now() / 1000 - s.lastEvent > STALL_S));
    const counts = {};
    for (const t of list) counts[t.state] = (counts[t.state] || 0) + 1;
    const grouped = federated && !s.expanded;
    const pool = grouped ? [...own, ...latest.values()] : list;
    const rank = (t) => (t.state === "error" ? 0 : TERMINAL.has(t.state) ? 3 : t.state === "pending" ? 2 : 1);
    const shown = s.expanded || pool.length <= COLLAPSE_AT ? pool
      : pool.map((t, i) => [rank(t), i, t]).sort((a, b) => a[0] - b[0] || a[1] - b[1]).slice(0, COLLAPSE_AT).map((x) => x[2]);
    // Errors of earlier rounds are not folded away: each stays pinned above the fold.
    const shownSet = new Set(shown);
    const pinned = grouped ? list.filter((t) => t.state === "error" && !shownSet.has(t) && !retried(t, list)) : [];
    const earlier = grouped ? list.length - pool.length - pinned.length : 0;
    const datasets = new Map();
    for (const t of list) if (t.dataset) (datasets.get(t.node) || datasets.set(t.node, new Set()).get(t.node)).add(t.dataset);
    const where = (t) => (t.dataset && datasets.get(t.node)?.size > 1 ? `${t.node}:${t.dataset}` : t.node);
    const row = (t) => `<li class="task" data-task="${t.id}" data-tool="${esc(t.tool)}"${participantOf(t) ? ` data-participant="${esc(participantOf(t))}"` : ""}>${taskRow(t, where(t))}</li>`;
    const pin = (t) => `<li class="pinned" data-task="${t.id}"><a href="#/tasks/${t.id}">✗ ${esc(where(t))} dropped in round ${t.round}</a>: <span class="field-error">${esc(t.error || "error")}</span></li>`;
    const ownShown = grouped ? shown.filter((t) => participantOf(t) === null) : [];
    const rest = grouped ? shown.filter((t) => participantOf(t) !== null) : shown;
    const type = specSteps.get(s.name)?.type;
    const span = stepSpan(s, list);
    const cpu = list.reduce((a, t) => a + (t.resources?.cpu_s || 0), 0);
    const rss = Math.max(0, ...list.map((t) => t.resources?.peak_rss_mb || 0));
    const res = cpu || rss ? resourcesText({ cpu_s: cpu || undefined, peak_rss_mb: rss || undefined }) : "";
    const countsText = `${plural(list.length, "task")}${Object.keys(counts).length ? ": " + Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(", ") : ""}`;
    s.el.dataset.status = st;
    s.el.innerHTML = `<div class="step-head"><h3>Step: ${esc(s.name)}${type ? ` <span class="step-type muted">${esc(type)}</span>` : ""}</h3><span class="step-badge">${badge(st)}${stalled ? ` <span class="badge s-stalled stalled" title="no progress for a while">‖ stalled</span>` : ""}</span>
      <div class="progress p-${esc(st)}" role="progressbar" aria-label="${esc(s.name)} progress" aria-valuemin="0" aria-valuemax="100" aria-valuenow="${pct}" aria-valuetext="${esc(ofWhat)}"><span style="width:${pct}%"></span></div><span class="pct">${esc(ofWhat)}</span>
      <span class="step-dur" title="step duration">${esc(dur(span))}</span>
      <span class="counts-cell"><span class="counts">${countsText}</span>${res ? ` <span class="step-res muted" title="CPU time of its tasks, highest peak memory">· ${esc(res)}</span>` : ""}</span></div>
      ${list.length ? `<ul class="tasks">${ownShown.map(row).join("")}${pinned.map(pin).join("")}${earlier > 0 ? `<li class="earlier muted">… ${plural(earlier, "task")} of earlier rounds</li>` : ""}${rest.map(row).join("")}</ul>` : `<p class="muted tasks">Tasks: (created when the step starts)</p>`}
      ${list.length > shown.length + pinned.length ? `<button class="secondary more">Show all ${plural(list.length, "task")}</button>`
        : federated && s.expanded ? `<button class="secondary less">Show the latest round only</button>` : ""}`;
    s.el.querySelector(".more")?.addEventListener("click", () => { s.expanded = true; renderStep(s); });
    s.el.querySelector(".less")?.addEventListener("click", () => { s.expanded = false; renderStep(s); });
  };
  for (const s of steps.values()) renderStep(s);

  // The federated panels: the own task's samples give the global model's curve.
  const globalSamples = new Map(); // own task id -> samples
  const stale = new Set(); // own task ids with samples newer than globalSamples holds
  const panels = new Map(); // step name -> section
  const fetching = new Set();
  const loadGlobal = async (own) => {
    if (fetching.has(own.id)) return;
    fetching.add(own.id);
    stale.delete(own.id);
    try { globalSamples.set(own.id, (await api(`/api/v1/tasks/${own.id}/metrics`)).samples); } catch { /* the next metric event asks again */ }
    fetching.delete(own.id);
    schedule();
  };
  const drawPanels = () => {
    for (const s of steps.values()) {
      const list = [...s.tasks.values()];
      if (!list.some((t) => participantOf(t) !== null)) continue;
      let sec = panels.get(s.name);
      if (!sec) {
        sec = document.createElement("section");
        sec.className = "fed-panel card";
        sec.dataset.step = s.name;
        document.getElementById("fed").append(sec);
        panels.set(s.name, sec);
      }
      const own = list.find((t) => participantOf(t) === null);
      if (own && (!globalSamples.has(own.id) || stale.has(own.id))) loadGlobal(own);
      fedPanel(sec, s, list, roundsOf(s.name), own ? globalSamples.get(own.id) || [] : [], RUN_ENDED.has(status) || TERMINAL.has(own?.state));
    }
  };
  const t0 = () => run.started_at ?? run.created_at;
  const drawTimeline = () => {
    // The span covers every task: events may report a task after the REST row's end.
    const last = Math.max(0, ...[...tasks.values()].map((t) => t.ended_at ?? t.started_at ?? 0));
    const end = RUN_ENDED.has(status) ? Math.max(run.ended_at ?? 0, last) : Math.max(Date.now() / 1000, last);
    document.getElementById("timeline").innerHTML = gantt([...tasks.values()], t0(), end);
    const span = RUN_ENDED.has(status) && run.ended_at == null ? null : spanOf({ ...run, ended_at: RUN_ENDED.has(status) ? run.ended_at : null });
    document.getElementById("run-duration").textContent = span != null ? `${RUN_ENDED.has(status) ? "took" : "running for"} ${dur(span)}` : "";
  };
  let reportDrawn = false;
  const drawResults = async () => {
    if (!RUN_ENDED.has(status)) return;
    const html = resultsTables([...steps.values()], (own) => {
      const g = {};
      for (const smp of globalSamples.get(own.id) || []) g[smp.name] = smp.value;
      return Object.keys(g).length ? g : own.metrics;
    });
    document.getElementById("results").innerHTML = html;
    const section = document.getElementById("results-section");
    section.hidden = !html && !reportDrawn;
    if (reportDrawn || !run.spec?.report) return;
    reportDrawn = true;
    // The flow's report (`report:` names its artifact): shown as JSON when it is a dict.
    const found = await api(`/api/v1/artifacts?run=${run.id}&name=${enc(run.spec.report)}&limit=5`).catch(() => []);
    const art = (Array.isArray(found) ? found : found.items || []).find((a) => a.name === run.spec.report);
    if (!art || art.kind !== "json" || !art.shareable) return;
    const value = await api(`/api/v1/artifacts/${enc(art.id)}/content`).catch(() => null);
    if (value && typeof value === "object") {
      document.getElementById("report").innerHTML = `<h3>Report: <a href="#/artifacts/${enc(art.id)}">${esc(art.name)} v${art.version}</a></h3>${jsonPreview(value)}`;
      section.hidden = false;
    }
  };
  // The views below the tree are redrawn at most every 400 ms, however busy the run.
  let viewsTimer = 0, left = false;
  const schedule = () => {
    if (viewsTimer || left) return;
    viewsTimer = setTimeout(() => { viewsTimer = 0; drawPanels(); drawTimeline(); drawResults(); }, 400);
  };
  onLeave(() => { left = true; clearTimeout(viewsTimer); });
  drawPanels(); drawTimeline(); drawResults();

  const buttons = () => {
    document.getElementById("cancel").disabled = status !== "running";
    document.getElementById("retry").disabled = !["failed", "cancelled"].includes(status);
    document.getElementById("run-status").innerHTML = badge(status);
  };
  buttons();
  // The server's view of the run: its states (final once the run ended) and the fields
  // only it knows (waiting_on, stalled, progress, resources, durations).
  const refresh = async (full) => {
    let fresh;
    try { fresh = await api(`/api/v1/runs/${run.id}`); } catch { return; }
    run = fresh;
    for (const s of fresh.steps) { const m = stepOf(s.name); m.rest = s; if (full) m.status = s.status; }
    for (const t of fresh.tasks) {
      const m = tasks.get(t.id);
      if (!m) { addTask(t); continue; }
      const keep = { message: m.message, metrics: m.metrics };
      if (full) Object.assign(m, taskModel(t), { message: keep.message, metrics: { ...keep.metrics, ...(t.metrics || {}) } });
      else Object.assign(m, { waiting_on: t.waiting_on ?? null, resources: t.resources ?? m.resources, duration_s: t.duration_s, started_at: m.started_at ?? t.started_at });
    }
    if (full && RUN_ENDED.has(fresh.status)) status = fresh.status;
    for (const id of globalSamples.keys()) stale.add(id);
    for (const s of steps.values()) renderStep(s);
    buttons();
    schedule();
  };
  const poll = setInterval(() => {
    if (RUN_ENDED.has(status)) return;
    refresh(false);
  }, POLL_MS);
  onLeave(() => clearInterval(poll));

  const apply = (batch) => {
    const dirty = new Set();
    let ended = false;
    for (const ev of batch) {
      const p = ev.payload || {};
      if (ev.kind === "run") {
        // A run never leaves an ended state (a retry is a new run); the replayed log starts
        // with the run's "running", which must not flip an ended status back.
        if (p.status && !(RUN_ENDED.has(status) && p.status === "running")) {
          if (RUN_ENDED.has(p.status) && !RUN_ENDED.has(status)) ended = true;
          status = p.status;
        }
        if (p.error) document.getElementById("run-error").innerHTML = `<div class="card field-error" role="alert">${esc(p.error)}</div>`;
        continue;
      }
      if (!ev.task_id) continue;
      let t = tasks.get(ev.task_id);
      if (!t) t = addTask({ id: ev.task_id, step: p.step, tool: p.tool, label: p.label, node: p.node, round: p.round, plan_key: p.plan_key, dataset: p.dataset, variant: p.variant, state: "pending", attempt: p.attempt });
      t.plan_key ??= p.plan_key; t.dataset ??= p.dataset; t.variant ??= p.variant;
      // The stream replays the run from its start: an ended attempt (as REST gave it, or
      // as an earlier event ended it) never goes back to an earlier state or value. A
      // later attempt (a retry) is news.
      const attempt = p.attempt ?? t.attempt;
      if (attempt < t.attempt) continue;
      if (TERMINAL.has(t.state) && attempt === t.attempt && !(ev.kind === "transition" && TERMINAL.has(p.dst))) {
        if (ev.kind !== "resources") continue;
      }
      if (ev.kind === "transition") {
        t.state = p.dst;
        if (p.attempt) t.attempt = p.attempt;
        if (p.dst === "error" && p.detail) t.error = p.detail;
        if (p.dst === "running" && ev.ts && t.started_at == null) t.started_at = ev.ts;
        if (TERMINAL.has(p.dst) && ev.ts) t.ended_at = ev.ts;
        if (TERMINAL.has(p.dst) || p.dst === "running") t.waiting_on = null;
      } else if (ev.kind === "metric") t.metrics[p.name] = p.value;
      else if (ev.kind === "progress") {
        t.progress = p.fraction; t.message = p.message;
        // Counts ("5,000/5,000 images") travel with the progress; the figures with "resources".
        if (p.done != null && (p.total != null || p.unit != null)) t.resources = { ...(t.resources || {}), progress: { done: p.done, total: p.total, unit: p.unit } };
      } else if (ev.kind === "resources") t.resources = { ...(t.resources || {}), ...pick(p, RESOURCE_KEYS) };
      else if (ev.kind === "waiting") t.waiting_on = p.node ? { node: p.node, offline_since: p.offline_since } : null;
      // The global model's curve: the own task's samples carry the round (its events do not).
      if (ev.kind === "metric" && participantOf(t) === null) stale.add(t.id);
      const s = steps.get(t.step);
      if (s && ev.ts) s.lastEvent = ev.ts;
      dirty.add(t.step);
    }
    for (const name of dirty) renderStep(steps.get(name));
    buttons();
    if (dirty.size || ended) schedule();
    // The run ended: every badge takes its final state from the server, without a reload.
    if (ended) refresh(true);
  };
  const stream = new RunStream(run.id, apply, (s) => { document.getElementById("conn").textContent = s === "live" ? "● live" : s; });
  window.__flowfedStream = stream; // lets the browser tests cut the connection
  onLeave(() => stream.close());

  document.getElementById("cancel").addEventListener("click", async () => {
    try { await api(`/api/v1/runs/${run.id}/cancel`, { method: "POST" }); toast("Cancelling…"); }
    catch (e) { document.getElementById("err").innerHTML = problemHtml(e); }
  });
  document.getElementById("retry").addEventListener("click", async () => {
    try { const r = await api(`/api/v1/runs/${run.id}/retry`, { method: "POST" }); location.hash = `#/runs/${r.run_id}`; }
    catch (e) { document.getElementById("err").innerHTML = problemHtml(e); }
  });
}
