// Inline SVG drawings: a layered DAG (flow steps, lineage) and a line chart (metrics).
export const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => (
  { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

/**
 * nodes: [{id, label, sub, href}], edges: [{from, to, label}]; left to right by depth.
 * Each node with an href is a focusable link, so the graph is keyboard navigable.
 */
export function dag(nodes, edges, title) {
  const depth = new Map(nodes.map((n) => [n.id, 0]));
  for (let pass = 0; pass < nodes.length; pass++) {
    let changed = false;
    for (const e of edges) {
      const d = (depth.get(e.from) ?? 0) + 1;
      if (depth.has(e.to) && d > depth.get(e.to) && d <= nodes.length) { depth.set(e.to, d); changed = true; }
    }
    if (!changed) break;
  }
  const cols = [];
  for (const n of nodes) (cols[depth.get(n.id)] ||= []).push(n);
  const W = 170, H = 46, GX = 70, GY = 22, P = 16;
  const pos = new Map();
  cols.forEach((col, c) => col.forEach((n, r) => pos.set(n.id, { x: P + c * (W + GX), y: P + r * (H + GY) })));
  const width = P * 2 + cols.length * (W + GX) - GX;
  const height = P * 2 + Math.max(1, ...cols.map((c) => c.length)) * (H + GY) - GY;
  const lines = edges.filter((e) => pos.has(e.from) && pos.has(e.to)).map((e) => {
    const a = pos.get(e.from), b = pos.get(e.to);
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    const label = e.label ? `<text class="edge-label" x="${mx}" y="${(y1 + y2) / 2 - 4}" text-anchor="middle">${esc(e.label)}</text>` : "";
    return `<path class="edge" d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2 - 4},${y2}"/>${label}`;
  }).join("");
  const boxes = nodes.map((n) => {
    const p = pos.get(n.id);
    const body = `<rect x="${p.x}" y="${p.y}" width="${W}" height="${H}" rx="6"/>
      <text x="${p.x + 8}" y="${p.y + 19}">${esc(trim(n.label, 24))}</text>
      <text x="${p.x + 8}" y="${p.y + 36}" class="sub">${esc(trim(n.sub || "", 26))}</text>`;
    return n.href
      ? `<a class="node" href="${esc(n.href)}" aria-label="${esc(n.label)} ${esc(n.sub || "")}">${body}</a>`
      : `<g class="node">${body}</g>`;
  }).join("");
  return `<svg class="graph" role="img" aria-label="${esc(title)}" viewBox="0 0 ${Math.max(width, 200)} ${height}"
    style="max-width:${Math.max(width, 200)}px">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">
    <path d="M0,0 L10,5 L0,10 z" fill="#7a828c"/></marker></defs>${lines}${boxes}</svg>`;
}

const trim = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);

/** A line chart of [{x, y}] with its axes' extremes labelled; a table says the same. */
export function lineChart(points, title) {
  const W = 520, H = 200, L = 48, B = 24, T = 18, R = 10;
  if (!points.length) return "";
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => L + (x1 === x0 ? (W - L - R) / 2 : ((x - x0) / (x1 - x0)) * (W - L - R));
  const sy = (y) => T + (y1 === y0 ? (H - T - B) / 2 : (1 - (y - y0) / (y1 - y0)) * (H - T - B));
  const pts = points.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ");
  const f = (v) => (Math.abs(v) >= 1000 || Number.isInteger(v) ? String(v) : v.toPrecision(4));
  return `<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}: ${points.length} points from ${f(ys[0])} to ${f(ys[ys.length - 1])}">
    <text x="${L}" y="12">${esc(title)}</text>
    <line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#c7cbd1"/>
    <line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#c7cbd1"/>
    <text x="${L - 4}" y="${T + 4}" text-anchor="end">${f(y1)}</text>
    <text x="${L - 4}" y="${H - B}" text-anchor="end">${f(y0)}</text>
    <text x="${L}" y="${H - 6}">${f(x0)}</text>
    <text x="${W - R}" y="${H - 6}" text-anchor="end">${f(x1)}</text>
    ${points.length === 1 ? `<circle cx="${sx(xs[0])}" cy="${sy(ys[0])}" r="3" fill="#1f5fbf"/>` : `<polyline points="${pts}"/>`}
  </svg>`;
}
