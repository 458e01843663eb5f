// The run page's views of a federated step and of the whole run: per-hospital curves, the
// hospital × round grid, honest round progress, the timeline per node and the results.
import { curve } from "./charts.js";
import { esc, ICON, dur, num, spanOf, TERMINAL, plural } from "./util.js";

// A federated round task's place in the plan: "Federated Training/round 3/hospital-a:breast"
// (and ".../round 3/aggregate"). Without the round it names one participant of the step.
const ROUND_IN_KEY = /\/round \d+\//;
export const participantOf = (t) => (t.round != null && t.plan_key && ROUND_IN_KEY.test(t.plan_key) ? t.plan_key.replace(ROUND_IN_KEY, "/") : null);
/** The participant's name for reading: "hospital-a" (with ":dataset" when a node has several). */
const whoOf = (key) => key.slice(key.indexOf("/") + 1).replace(/:[^:/]*$/, "");

/** The latest attempt of each (participant, round): the cell the grid shows. */
function cells(list) {
  const out = new Map();
  for (const t of list) {
    const p = participantOf(t);
    if (p === null) continue;
    const k = `${p}\0${t.round}`;
    const cur = out.get(k);
    if (!cur || t.attempt >= cur.attempt) out.set(k, t);
  }
  return out;
}

/**
 * Rounds done over rounds: a round is done when its aggregation finished (or, without an
 * aggregation task, when every task of the round ended). The step's own `progress` from
 * the server ({done, total, unit}) wins when it has one.
 */
export function roundProgress(list, rounds, given) {
  if (given && Number.isFinite(given.done) && Number.isFinite(given.total) && given.total > 0) return given;
  const byRound = new Map();
  for (const t of list) if (participantOf(t) !== null) (byRound.get(t.round) || byRound.set(t.round, []).get(t.round)).push(t);
  if (!byRound.size) return null;
  let done = 0;
  for (const [, ts] of byRound) {
    const agg = ts.filter((t) => participantOf(t).endsWith("/aggregate"));
    const ok = agg.length ? agg.some((t) => t.state === "finished" || t.state === "cached") : ts.every((t) => TERMINAL.has(t.state));
    if (ok) done += 1;
  }
  return { done, total: rounds ?? Math.max(...byRound.keys()), unit: "rounds" };
}

const HIDDEN = new Set(["rounds", "seconds_per_round", "examples"]);
const FIRST = ["loss", "accuracy", "train_accuracy", "roc_auc"];

/**
 * The federated panel of `step`: one chart per metric (validation metrics `val_x` drawn
 * dashed beside `x`), a line per hospital plus the global model; then the hospital ×
 * round grid. `global` is the step's own task's samples [{name, value, step}].
 */
export function fedPanel(section, step, list, rounds, global, ended = false) {
  const byParticipant = new Map();
  for (const t of cells(list).values()) {
    const p = participantOf(t);
    if (p.endsWith("/aggregate")) continue;
    (byParticipant.get(p) || byParticipant.set(p, []).get(p)).push(t);
  }
  const names = new Set();
  for (const ts of byParticipant.values()) for (const t of ts) for (const k of Object.keys(t.metrics || {})) names.add(k);
  for (const s of global) if (s.step != null) names.add(s.name);
  // A metric that never moves (the examples a site holds) is a fact for the results, not a curve.
  const groups = new Map();
  for (const n of names) {
    if (HIDDEN.has(n)) continue;
    const base = n.replace(/^val_/, "");
    (groups.get(base) || groups.set(base, []).get(base)).push(n);
  }
  const order = [...groups.keys()].sort((a, b) => (FIRST.indexOf(a) + 1 || 99) - (FIRST.indexOf(b) + 1 || 99) || a.localeCompare(b));
  let charts = section.querySelector(".fed-charts");
  if (!charts) {
    section.innerHTML = `<h2>${esc(step.name)}: rounds</h2><p class="muted">One line per hospital and the global model; hover a chart for its values.</p>
      <div class="charts fed-charts"></div><h3>Hospitals × rounds</h3><div class="table-wrap round-grid-wrap"></div>`;
    charts = section.querySelector(".fed-charts");
  }
  const participants = [...byParticipant.keys()].sort();
  for (const base of order) {
    let fig = charts.querySelector(`figure[data-metric="${CSS.escape(base)}"]`);
    if (!fig) {
      fig = document.createElement("figure");
      fig.className = "curve";
      fig.dataset.metric = base;
      charts.append(fig);
    }
    const series = [];
    participants.forEach((p, i) => {
      for (const n of groups.get(base).sort()) {
        const pts = new Map();
        for (const t of byParticipant.get(p)) if (typeof t.metrics?.[n] === "number") pts.set(t.round, t.metrics[n]);
        if (pts.size) series.push({ label: `${whoOf(p)}${n === base ? "" : " (validation)"}`, points: pts, dash: n !== base, colour: i });
      }
    });
    for (const n of groups.get(base).sort()) {
      const pts = new Map();
      for (const s of global) if (s.name === n && s.step != null) pts.set(s.step, s.value);
      if (pts.size) series.push({ label: `global model${n === base ? "" : " (validation)"}`, points: pts, dash: n !== base, global: true });
    }
    if (series.length) curve(fig, base, "round", series);
  }
  section.querySelector(".round-grid-wrap").innerHTML = roundGrid(list, rounds, ended);
}

/**
 * Hospitals down, rounds across: each cell the task's state icon and duration. A cell is
 * marked slow when it took over twice its round's median, and missing when its round ran
 * without it, so the hospital that holds a run back stands out.
 */
export function roundGrid(list, rounds, ended = false) {
  const all = cells(list);
  if (!all.size) return "";
  const parts = [...new Set([...all.values()].map(participantOf))].sort((a, b) => a.endsWith("/aggregate") - b.endsWith("/aggregate") || a.localeCompare(b));
  const seen = [...new Set([...all.values()].map((t) => t.round))];
  const last = Math.max(rounds || 0, ...seen);
  const median = new Map();
  for (const r of seen) {
    const ds = [...all.values()].filter((t) => t.round === r && TERMINAL.has(t.state)).map((t) => spanOf(t)).filter((d) => d != null).sort((a, b) => a - b);
    if (ds.length) median.set(r, ds[Math.floor(ds.length / 2)]);
  }
  // A round is over once a later one started (or the step ended): only then is a
  // participant without a task there missing, not merely not yet sent.
  const latestRound = Math.max(...seen);
  const over = (r) => r < latestRound || (ended && r <= latestRound);
  const head = Array.from({ length: last }, (_, i) => `<th scope="col">${i + 1}</th>`).join("");
  const rows = parts.map((p) => {
    const tds = Array.from({ length: last }, (_, i) => {
      const r = i + 1, t = all.get(`${p}\0${r}`);
      if (!t) {
        return over(r) ? `<td class="cell missing" data-round="${r}" title="${esc(whoOf(p))} was not in round ${r}">–</td>` : `<td class="cell future" data-round="${r}"></td>`;
      }
      const d = spanOf(t);
      const slow = TERMINAL.has(t.state) && d != null && median.has(r) && d > 2 * median.get(r) && d > 0.5;
      const why = t.state === "error" && t.error ? `: ${t.error}` : "";
      return `<td class="cell s-${esc(t.state)}${slow ? " slow" : ""}" data-round="${r}" data-state="${esc(t.state)}" title="${esc(whoOf(p))}, round ${r}: ${esc(t.state)}${d != null ? ` in ${esc(dur(d))}` : ""}${esc(why)}${slow ? " (slow)" : ""}"><a href="#/tasks/${t.id}"><span aria-hidden="true">${ICON[t.state] || "•"}</span><span class="sr">${esc(t.state)}</span> ${d != null && t.state !== "pending" ? esc(dur(d)) : ""}</a></td>`;
    }).join("");
    return `<tr data-participant="${esc(p)}"><th scope="row">${esc(whoOf(p))}</th>${tds}</tr>`;
  }).join("");
  return `<table class="round-grid"><caption class="sr">Each participant's task per round: state and duration</caption><thead><tr><th scope="col">round</th>${head}</tr></thead><tbody>${rows}</tbody></table>`;
}

/**
 * The timeline: one row per node, a bar per task from its start to its end (or now),
 * coloured by state. `t0`..`t1` is the run's span.
 */
export function gantt(list, t0, t1) {
  const placed = list.filter((t) => t.started_at != null);
  if (!placed.length || !(t1 > t0)) return `<p class="muted">No task has started yet.</p>`;
  const nodes = [...new Set(placed.map((t) => t.node))].sort((a, b) => (a === "local") - (b === "local") || a.localeCompare(b));
  const pct = (x) => (100 * (x - t0)) / (t1 - t0);
  const rows = nodes.map((n) => {
    const bars = placed.filter((t) => t.node === n).map((t) => {
      const a = pct(t.started_at), b = pct(t.ended_at ?? t1);
      const label = `${t.label || t.tool}${t.round != null ? `, round ${t.round}` : ""}: ${t.state}, ${dur(spanOf(t))}`;
      return `<a class="bar s-${esc(t.state)}" href="#/tasks/${t.id}" style="left:${a.toFixed(2)}%;width:${Math.max(0.3, b - a).toFixed(2)}%" title="${esc(label)}" aria-label="${esc(label)}"></a>`;
    }).join("");
    return `<div class="gantt-row" data-node="${esc(n)}"><span class="gantt-node">${esc(n)}</span><div class="gantt-track">${bars}</div></div>`;
  }).join("");
  return `<div class="gantt" role="group" aria-label="Timeline: tasks per node">${rows}<div class="gantt-row gantt-axis"><span></span><div class="gantt-track"><span>0 s</span><span>${esc(dur(t1 - t0))}</span></div></div></div>`;
}

/**
 * Results by hospital once the run ended: for each step with tasks on several nodes, a row
 * per node with its metrics (a federated step: each hospital's last round, and the global
 * model's final values).
 */
export function resultsTables(steps, ownLatest) {
  const out = [];
  for (const s of steps) {
    const list = [...s.tasks.values()];
    const fed = list.some((t) => participantOf(t) !== null);
    let rows;
    if (fed) {
      const last = new Map();
      for (const t of cells(list).values()) {
        const p = participantOf(t);
        if (p.endsWith("/aggregate") || !t.metrics || !Object.keys(t.metrics).length) continue;
        const cur = last.get(t.node);
        if (!cur || t.round > cur.round) last.set(t.node, t);
      }
      rows = [...last.values()].map((t) => ({ who: t.node, note: `round ${t.round}`, metrics: t.metrics, state: t.state, id: t.id }));
      const own = list.find((t) => participantOf(t) === null);
      const g = own && ownLatest(own);
      if (g && Object.keys(g).length) rows.push({ who: "global model", note: "", metrics: g, state: own.state, id: own.id });
    } else {
      // Every placed task, a failed one too (its row says so), once two hospitals reported.
      const placed = list.filter((t) => t.node && t.node !== "local");
      const reported = placed.filter((t) => t.metrics && Object.keys(t.metrics).length);
      if (new Set(reported.map((t) => t.node)).size < 2) continue;
      rows = placed.map((t) => ({ who: t.dataset ? `${t.node}:${t.dataset}` : t.node, note: "", metrics: t.metrics || {}, state: t.state, id: t.id }));
    }
    if (rows.length < 2) continue;
    const names = [...new Set(rows.flatMap((r) => Object.keys(r.metrics)))].filter((n) => !["tp", "fp", "fn", "tn", "rounds"].includes(n));
    names.sort((a, b) => (FIRST.indexOf(a) + 1 || 99) - (FIRST.indexOf(b) + 1 || 99) || a.localeCompare(b));
    out.push(`<div class="table-wrap"><table class="results" data-step="${esc(s.name)}"><caption>${esc(s.name)} <span class="muted">(${plural(rows.length, "row")})</span></caption>
      <thead><tr><th scope="col">hospital</th>${names.map((n) => `<th scope="col">${esc(n)}</th>`).join("")}</tr></thead><tbody>
      ${rows.map((r) => `<tr data-who="${esc(r.who)}"><th scope="row"><a href="#/tasks/${r.id}">${esc(r.who)}</a>${r.note ? ` <span class="muted">${esc(r.note)}</span>` : ""}${r.state === "error" ? ` <span class="s-error">✗ error</span>` : ""}</th>${names.map((n) => `<td data-metric="${esc(n)}">${r.metrics[n] == null ? "—" : esc(num(r.metrics[n]))}</td>`).join("")}</tr>`).join("")}</tbody></table></div>`);
  }
  return out.join("");
}
