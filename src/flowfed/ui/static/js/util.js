// Small helpers every page shares: escaping, state badges, numbers, times, plurals.
export const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => (
  { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

export const ICON = {
  pending: "○", initialized: "◔", started: "◑", running: "▶", finished: "✓", completed: "✓",
  success: "✓", cached: "⟲", error: "✗", failed: "✗", skipped: "↷", cancelled: "■", cancelling: "■",
  online: "●", offline: "○", queued: "…", claimed: "◔", stalled: "‖", waiting: "⌛",
};
/** A state as an icon and a word (never colour alone). */
export const badge = (s) => `<span class="badge s-${esc(s)}" data-state="${esc(s)}"><span aria-hidden="true">${ICON[s] || "•"}</span>${esc(s)}</span>`;
export const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "—");
/** A wall-clock time of day ("17:01:09"), as the node-health lines give it. */
export const clock = (t) => {
  // Seconds since the epoch, or an ISO 8601 time ("2026-12-05T17:01:09Z") as REST gives it.
  const ms = typeof t === "string" ? Date.parse(t) : typeof t === "number" ? t * 1000 : NaN;
  return Number.isFinite(ms) ? new Date(ms).toLocaleTimeString([], { hour12: false }) : "—";
};
export const short = (id) => String(id || "").slice(0, 8);
export const TERMINAL = new Set(["finished", "cached", "error", "skipped", "cancelled"]);
export const RUN_ENDED = new Set(["success", "failed", "cancelled"]);

/** A metric for reading: three significant digits, no trailing zeros (0.21, 1230, 0.000123). */
export const num = (v) => {
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() ? Number(v) : NaN;
  return Number.isFinite(n) ? String(Number(n.toPrecision(3))) : String(v ?? "—");
};

/** "1 task", "2 tasks", "0 tasks"; `many` for irregular words. */
export const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** A duration in seconds for reading: "0.4 s", "12 s", "3 min 04 s", "1 h 02 min". */
export function dur(s) {
  if (s == null || !Number.isFinite(s) || s < 0) return "";
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60), sec = Math.round(s - m * 60);
  if (m < 60) return `${m} min ${String(sec).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

/**
 * How long a run, step or task took: its `duration_s` when the server gives one, else from
 * its start (`started_at`, else `created_at`) to its end (or to now while it goes on).
 */
export function spanOf(x, now = Date.now() / 1000) {
  if (!x) return null;
  const start = x.started_at ?? x.created_at;
  // Still going: counted to now (a `duration_s` read earlier is already out of date).
  if (x.ended_at == null && start != null && x.live !== false) return now - start;
  if (typeof x.duration_s === "number") return x.duration_s;
  if (start == null) return null;
  return (x.ended_at ?? now) - start;
}

/** A count for reading: "5,000". */
export const count = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : String(n ?? ""));

/**
 * Resource use in a few words: "cpu 1.2 s · 85 MB · 5,000/5,000 images". Empty without data.
 * `r` is the task's `resources` ({wall_s, cpu_s, peak_rss_mb, progress}) or null.
 */
export function resourcesText(r) {
  if (!r) return "";
  const parts = [];
  if (typeof r.cpu_s === "number") parts.push(`cpu ${dur(r.cpu_s)}`);
  if (typeof r.peak_rss_mb === "number") parts.push(`${r.peak_rss_mb >= 1024 ? `${(r.peak_rss_mb / 1024).toFixed(1)} GB` : `${Math.round(r.peak_rss_mb)} MB`}`);
  const p = r.progress;
  if (p && p.done != null) parts.push(`${count(p.done)}${p.total != null ? `/${count(p.total)}` : ""}${p.unit ? ` ${p.unit}` : ""}`);
  return parts.join(" · ");
}

export function toast(msg) {
  const box = document.getElementById("toast");
  const d = document.createElement("div");
  d.textContent = msg;
  box.append(d);
  setTimeout(() => d.remove(), 5000);
}

export function problemHtml(e) {
  const items = (e.errors || []).map((x) => `<li>${x.line ? `line ${x.line}: ` : ""}${esc(x.message || x.msg)}${x.field ? ` <span class="muted">(${esc(x.field)})</span>` : ""}</li>`).join("");
  return `<div class="card field-error" role="alert"><strong>${esc(e.message)}</strong>${items ? `<ul>${items}</ul>` : ""}</div>`;
}

export function empty(what, why) {
  return `<div class="empty"><p><strong>No ${esc(what)} yet.</strong></p><p>${esc(why)}</p></div>`;
}

/** A model's swept params ("subvariant"), or a dash for a step that sweeps nothing. */
export const variantText = (v) => (v && Object.keys(v).length ? Object.entries(v).map(([k, x]) => `${k}=${typeof x === "string" ? x : JSON.stringify(x)}`).join(", ") : "—");

/** The page's main element and a way to fill it with a title. */
export const main = document.getElementById("main");
export const set = (html, title) => { main.innerHTML = html; document.title = `${title} · flowfed`; };
