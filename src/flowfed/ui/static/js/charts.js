// Curves (uPlot, with the values under the cursor in the legend) and metric tiles.
import { uPlotLib } from "./lib.js";
import { esc, num } from "./util.js";

// Distinguishable in light and dark mode; the global model is drawn in the text colour.
const PALETTE = ["#1f77b4", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#a6761d", "#e6ab02"];
const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

/**
 * One chart of several lines against a shared x (round or step), kept in `fig`.
 * `series`: [{label, points: Map(x -> y), dash?, global?}]. Redrawing with the same labels
 * only swaps the data, so a chart updated every frame keeps its cursor and size.
 *
 * Example: await curve(fig, "loss", "round", [{label: "hospital-a", points: new Map([[1, .6]])}])
 */
export async function curve(fig, title, xLabel, series) {
  const uPlot = await uPlotLib();
  if (!fig.isConnected) return;
  const xs = [...new Set(series.flatMap((s) => [...s.points.keys()]))].filter(Number.isFinite).sort((a, b) => a - b);
  const data = [xs, ...series.map((s) => xs.map((x) => (s.points.has(x) && Number.isFinite(s.points.get(x)) ? s.points.get(x) : null)))];
  const labels = series.map((s) => s.label).join("\n");
  fig.dataset.series = labels.split("\n").join(",");
  fig.dataset.points = String(data.slice(1).reduce((n, ys) => n + ys.filter((y) => y !== null).length, 0));
  fig.dataset.xmax = xs.length ? String(xs[xs.length - 1]) : "";
  if (fig._plot && fig._labels === labels) { fig._plot.setData(data); return; }
  fig._plot?.destroy();
  fig.innerHTML = `<figcaption>${esc(title)}</figcaption>`;
  const fg = css("--fg") || "#1d1f21", grid = css("--line") || "#d5d7db";
  const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
  let colour = 0;
  const opts = {
    width: Math.max(300, Math.min(560, fig.clientWidth || 520)), height: 220,
    scales: { x: { time: false } },
    axes: [{ ...axis, label: xLabel, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] }, { ...axis, values: (u, v) => v.map(num), size: 56 }],
    legend: { live: true },
    cursor: { points: { size: 6 } },
    series: [{ label: xLabel, value: (u, v) => (v == null ? "—" : String(v)) }, ...series.map((s) => ({
      label: s.label, spanGaps: true, points: { show: true, size: 4 },
      stroke: s.global ? fg : PALETTE[s.colour ?? colour++ % PALETTE.length],
      width: s.global ? 2.5 : 1.5, dash: s.dash ? [6, 4] : undefined,
      value: (u, v) => (v == null ? "—" : num(v)),
    }))],
  };
  fig._plot = new uPlot(opts, data, fig);
  fig._labels = labels;
}

/** Metrics that were reported once: tiles of name and value, not one-dot charts. */
export function tiles(entries) {
  return `<div class="tiles">${entries.map(([k, v]) => `<div class="tile" data-metric="${esc(k)}"><span class="tile-name">${esc(k)}</span><span class="tile-value">${esc(num(v))}</span></div>`).join("")}</div>`;
}

/**
 * A binary confusion matrix as a 2×2 grid (rows: actual; columns: predicted) when the
 * metrics hold its four counts (`tp`, `fp`, `fn`, `tn`), else "".
 */
export function confusion(m) {
  if (!m || !["tp", "fp", "fn", "tn"].every((k) => typeof m[k] === "number")) return "";
  const n = m.tp + m.fp + m.fn + m.tn || 1;
  const cell = (k, v, ok) => `<td class="cm ${ok ? "cm-ok" : "cm-bad"}" data-cell="${k}" style="--share:${(v / n).toFixed(3)}"><strong>${v}</strong><span class="muted"> ${k}</span></td>`;
  return `<table class="confusion" aria-label="Confusion matrix"><thead><tr><th></th><th scope="col">predicted positive</th><th scope="col">predicted negative</th></tr></thead>
    <tbody><tr><th scope="row">actual positive</th>${cell("tp", m.tp, true)}${cell("fn", m.fn, false)}</tr>
    <tr><th scope="row">actual negative</th>${cell("fp", m.fp, false)}${cell("tn", m.tn, true)}</tr></tbody></table>`;
}

/** A dict as indented JSON, cut at `limit` characters (saying so). */
export function jsonPreview(value, limit = 20000) {
  let text = JSON.stringify(value, null, 2);
  const cut = text.length > limit;
  if (cut) text = text.slice(0, limit);
  return `<pre class="json" tabindex="0" aria-label="JSON preview">${esc(text)}${cut ? "\n… (cut; download the artifact for the rest)" : ""}</pre>`;
}
