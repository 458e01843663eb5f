// The task page: facts, resources, transitions, logs, metrics (tiles, curves, confusion
// matrix), retries, egress and outputs.
import { api, enc } from "./api.js";
import { RunStream } from "./live.js";
import { confusion, curve, tiles } from "./charts.js";
import { badge, clock, count, dur, esc, resourcesText, set, short, spanOf, variantText, when } from "./util.js";

const COUNTS = new Set(["tp", "fp", "fn", "tn"]);

export async function taskPage(taskId, signal, onLeave) {
  const [task, metrics] = await Promise.all([api(`/api/v1/tasks/${taskId}`), api(`/api/v1/tasks/${taskId}/metrics`)]);
  // A retry runs the same task again under the next attempt number: its history is the
  // transitions grouped by attempt, each ending in that attempt's outcome.
  const byAttempt = new Map();
  for (const tr of task.transitions) (byAttempt.get(tr.attempt) || byAttempt.set(tr.attempt, []).get(tr.attempt)).push(tr);
  const attempts = [...byAttempt.entries()].map(([n, trs]) => ({ n, end: trs[trs.length - 1], detail: trs.find((x) => x.detail)?.detail }));
  const arts = await api(`/api/v1/artifacts?run=${task.run_id}&include_rounds=true&limit=1000`, { signal }).catch(() => []);
  if (signal.aborted) return;
  const mine = (Array.isArray(arts) ? arts : arts.items || []).filter((a) => a.task_id === task.id);
  const egress = task.node !== "local" ? await api(`/api/v1/tasks/${taskId}/egress`, { signal }).catch(() => null) : null;
  if (signal.aborted) return;
  const egressHtml = !egress ? "" : `<h2 id="egress">What left node ${esc(task.node)}</h2>${egress.items.length
    ? `<table class="card"><thead><tr><th>output</th><th>kind</th><th>decision</th><th>bytes</th><th>rows covered</th><th>audit entry</th></tr></thead><tbody>${egress.items.map((e) => `<tr><td>${esc(e.output)}</td><td>${esc(e.kind)}${e.category ? ` (${esc(e.category)})` : ""}</td><td>${e.released ? "released" + (e.suppressed_cells ? `, ${e.suppressed_cells} cell(s) suppressed` : "") : `refused: ${esc(e.rule || "")} ${esc(e.reason || "")}`}</td><td>${e.size ?? 0}</td><td>${e.rows ?? "—"}</td><td class="mono">${esc(short(e.audit || ""))}</td></tr>`).join("")}</tbody></table>`
    : `<p class="muted">Nothing: only hashes and sizes of its outputs reached the server.</p>`}`;
  // The error is said once, in its card: the transitions and the retry history below
  // leave out a detail that only repeats it.
  const errText = task.error ? (String(task.error.message).startsWith(task.error.type || "\u0000") ? task.error.message : `${task.error.type || "Error"}: ${task.error.message}`) : "";
  const repeats = (d) => !!task.error && !!d && (errText.includes(d) || d.includes(String(task.error.message)));
  const d = spanOf(task);
  // What each earlier attempt used (`attempt_resources`), beside its outcome.
  const usedBy = (n) => resourcesText((task.attempt_resources || []).find((r) => r.attempt === n));
  set(`<p><a href="#/runs/${task.run_id}">← Run ${short(task.run_id)}</a></p>
    <h1>${esc(task.step)}: ${esc(task.tool)} <span id="task-state">${badge(task.state)}</span></h1>
    <dl class="kv card">${task.label ? `<dt>Task</dt><dd>${esc(task.label)}</dd>` : ""}<dt>Node</dt><dd>${esc(task.node)}</dd><dt>Round</dt><dd>${task.round ?? "—"}</dd>
    ${task.dataset ? `<dt>Dataset</dt><dd>${esc(task.dataset)}</dd>` : ""}${task.variant && Object.keys(task.variant).length ? `<dt>Subvariant</dt><dd class="mono">${esc(variantText(task.variant))}</dd>` : ""}
    <dt>Attempt</dt><dd>${task.attempt}</dd><dt>Cached</dt><dd>${task.cached ? "yes" : "no"}</dd>
    <dt>Started</dt><dd>${when(task.started_at)}</dd><dt>Ended</dt><dd>${when(task.ended_at)}</dd>
    <dt>Duration</dt><dd id="task-duration">${task.started_at != null || task.duration_s != null ? esc(dur(d)) : "—"}</dd>
    ${task.waiting_on ? `<dt>Waiting</dt><dd class="waiting">waiting for ${esc(task.waiting_on.node)}${task.waiting_on.offline_since ? ` (offline since ${esc(clock(task.waiting_on.offline_since))})` : ""}</dd>` : ""}</dl>
    <h2>Resources</h2><div id="resources"></div>
    ${task.error ? `<div class="card field-error" role="alert" id="task-error"><strong>${esc(errText)}</strong>${task.error.traceback ? `<pre class="logs">${esc(task.error.traceback)}</pre>` : ""}</div>` : ""}
    <h2>Transitions</h2><ol id="transitions">${task.transitions.map((t) => `<li>${badge(t.src)} → ${badge(t.dst)} <span class="muted">${when(t.at)}${t.detail && !repeats(t.detail) ? " · " + esc(t.detail) : ""}</span></li>`).join("")}</ol>
    <h2>Logs <span class="conn muted" id="conn"></span></h2><pre class="logs" id="logs" tabindex="0" aria-label="Task logs"></pre>
    <h2>Metrics</h2><div id="metrics"></div>
    <h2>Retry history</h2>${attempts.length > 1 ? `<ol id="attempts">${attempts.map((a) => `<li>attempt ${a.n}: ${badge(a.end.dst)} <span class="muted">${when(a.end.at)}</span>${a.detail && !repeats(a.detail) ? ` ${esc(a.detail)}` : ""}${usedBy(a.n) ? ` <span class="muted res">${esc(usedBy(a.n))}</span>` : ""}</li>`).join("")}</ol>` : `<p class="muted">First attempt; no retries.</p>`}
    ${egressHtml}
    <h2>Outputs</h2>${mine.length ? `<ul>${mine.map((a) => `<li><a href="#/artifacts/${enc(a.id)}">${esc(a.name)} v${a.version}</a></li>`).join("")}</ul>` : `<p class="muted">None recorded.</p>`}`,
  `Task ${short(task.id)}`);

  let resources = task.resources ?? null;
  const drawResources = () => {
    const r = resources, p = r?.progress;
    document.getElementById("resources").innerHTML = r ? `<dl class="kv card" id="resource-facts">
      ${r.wall_s != null ? `<dt>Wall time</dt><dd>${esc(dur(r.wall_s))}</dd>` : ""}${r.cpu_s != null ? `<dt>CPU time</dt><dd>${esc(dur(r.cpu_s))}</dd>` : ""}
      ${r.peak_rss_mb != null ? `<dt>Peak memory</dt><dd>${esc(String(Math.round(r.peak_rss_mb)))} MB</dd>` : ""}
      ${p && p.done != null ? `<dt>Processed</dt><dd>${esc(count(p.done))}${p.total != null ? ` of ${esc(count(p.total))}` : ""}${p.unit ? ` ${esc(p.unit)}` : ""}</dd>` : ""}</dl>`
      : `<p class="muted">Not measured for this task.</p>`;
  };
  drawResources();

  // Metrics: one reported value is a tile; a series is a curve (x: the step the tool gave,
  // e.g. the epoch); the four confusion counts are a 2×2 grid.
  let samples = metrics.samples;
  const drawMetrics = () => {
    const by = new Map();
    for (const s of samples) (by.get(s.name) || by.set(s.name, []).get(s.name)).push(s);
    const latest = {};
    for (const [n, list] of by) latest[n] = list[list.length - 1].value;
    const series = [...by.entries()].filter(([n, list]) => !COUNTS.has(n) && list.length > 1);
    const single = [...by.entries()].filter(([n, list]) => !COUNTS.has(n) && list.length === 1).map(([n, list]) => [n, list[0].value]);
    const box = document.getElementById("metrics");
    if (!by.size) { box.innerHTML = `<p class="muted">No metrics yet.</p>`; return; }
    let figs = box.querySelector(".charts");
    if (!figs || box.dataset.shape !== series.map((x) => x[0]).join(",")) {
      box.dataset.shape = series.map((x) => x[0]).join(",");
      box.innerHTML = `<div class="metric-tiles"></div><div class="metric-confusion"></div><div class="charts">${series.map(([n]) => `<figure class="curve" data-metric="${esc(n)}"></figure>`).join("")}</div>`;
      figs = box.querySelector(".charts");
    }
    box.querySelector(".metric-tiles").innerHTML = single.length ? tiles(single) : "";
    box.querySelector(".metric-confusion").innerHTML = confusion(latest);
    for (const [n, list] of series) {
      const pts = new Map(list.map((s, i) => [Number.isFinite(s.step) ? s.step : i + 1, s.value]));
      curve(figs.querySelector(`figure[data-metric="${CSS.escape(n)}"]`), n, "step", [{ label: n, points: pts }]);
    }
  };
  drawMetrics();
  // A live metric event names the step (the flow's) and not the tool's x: the samples are
  // re-read from the server (at most every 500 ms) so each point sits at its own x.
  let refetch = 0;
  const reloadMetrics = () => {
    if (refetch) return;
    refetch = setTimeout(async () => {
      try { samples = (await api(`/api/v1/tasks/${taskId}/metrics`)).samples; drawMetrics(); } catch { /* next event retries */ }
      refetch = 0;
    }, 500);
  };
  onLeave(() => clearTimeout(refetch));

  const logs = document.getElementById("logs");
  const seenMetric = metrics.samples.length;
  let metricEvents = 0;
  const stream = new RunStream(task.run_id, (batch) => {
    const frag = document.createDocumentFragment();
    for (const ev of batch) {
      if (ev.task_id !== task.id) continue;
      const p = ev.payload || {};
      if (ev.kind === "log") {
        const line = document.createElement("div");
        line.className = `lvl-${p.level}`;
        line.dataset.id = ev.id;
        line.textContent = `${new Date(ev.ts * 1000).toLocaleTimeString()} ${p.level.toUpperCase().padEnd(7)} ${p.message}`;
        frag.append(line);
      } else if (ev.kind === "transition") {
        document.getElementById("task-state").innerHTML = badge(p.dst);
        const li = document.createElement("li");
        li.innerHTML = `${badge(p.src)} → ${badge(p.dst)}`;
        if (!task.transitions.some((t) => t.dst === p.dst && t.src === p.src)) document.getElementById("transitions").append(li);
      } else if (ev.kind === "metric") {
        metricEvents += 1;
        if (metricEvents > seenMetric) reloadMetrics();
      } else if (ev.kind === "resources") {
        resources = { ...(resources || {}), wall_s: p.wall_s, cpu_s: p.cpu_s, peak_rss_mb: p.peak_rss_mb, ...(p.progress !== undefined ? { progress: p.progress } : {}) };
        drawResources();
      } else if (ev.kind === "progress" && p.done != null && (p.total != null || p.unit != null)) {
        resources = { ...(resources || {}), progress: { done: p.done, total: p.total, unit: p.unit } };
        drawResources();
      }
    }
    const atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
    logs.append(frag);
    if (atEnd) logs.scrollTop = logs.scrollHeight;
  }, (s) => { document.getElementById("conn").textContent = s === "live" ? "● live" : s; });
  window.__flowfedStream = stream;
  onLeave(() => stream.close());
}
