// Graphs (flow steps, lineage) laid out by dagre at natural size, in a view that pans
// (drag) and zooms (wheel, or the + / − / fit buttons for keyboards).
import { dagreLib } from "./lib.js";
import { esc } from "./util.js";

const FONT = "12px system-ui, sans-serif";
let ctx = null;
const textWidth = (s) => {
  ctx ||= document.createElement("canvas").getContext("2d");
  ctx.font = FONT;
  return ctx.measureText(s).width;
};

/**
 * Fold each name that has three or more versions into one box ("global_model v1…v30"):
 * a 30-round run's lineage then reads as its steps, not as 120 boxes.
 * nodes: [{id, name, version, ...}], edges: [{from, to}] → the same shapes, folded.
 *
 * Example: foldVersions([{id: 1, name: "m", version: 1}, ...], [], {keep: 9})
 */
export function foldVersions(nodes, edges, { min = 3, keep = null } = {}) {
  const byName = new Map();
  // `keep` (the artifact a lineage is drawn for) keeps its own box.
  for (const n of nodes) if (n.name != null && n.id !== keep) (byName.get(n.name) || byName.set(n.name, []).get(n.name)).push(n);
  const into = new Map();
  const out = [];
  for (const n of nodes) {
    const group = n.name != null && n.id !== keep ? byName.get(n.name) : null;
    if (!group || group.length < min) { out.push(n); continue; }
    const key = `fold:${n.name}`;
    into.set(n.id, key);
    if (group[0] !== n) continue;
    const vs = group.map((g) => g.version).filter(Number.isFinite).sort((a, b) => a - b);
    const latest = group.reduce((a, b) => ((b.version ?? 0) > (a.version ?? 0) ? b : a));
    out.push({ ...latest, id: key, label: `${n.name} v${vs[0]}…v${vs[vs.length - 1]}`, sub: `${group.length} versions`, folded: group.length });
  }
  const seen = new Set();
  const folded = [];
  for (const e of edges) {
    const from = into.get(e.from) || e.from, to = into.get(e.to) || e.to;
    const k = `${from}\0${to}\0${e.label || ""}`;
    if (from === to || seen.has(k)) continue;
    seen.add(k);
    folded.push({ ...e, from, to });
  }
  return { nodes: out, edges: folded };
}

/**
 * Draw `nodes` ({id, label, sub, href}) and `edges` ({from, to, label}) left to right into
 * `box` at natural size (12 px labels, boxes as wide as their text). Resolves once drawn.
 */
export async function drawGraph(box, nodes, edges, title) {
  const dagre = await dagreLib();
  if (!box.isConnected) return;
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: "LR", nodesep: 18, ranksep: 56, edgesep: 12, marginx: 16, marginy: 36 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) {
    const w = Math.ceil(Math.max(textWidth(n.label || ""), textWidth(n.sub || ""), 60)) + 20;
    g.setNode(n.id, { width: w, height: n.sub ? 44 : 28 });
  }
  edges.forEach((e, i) => {
    if (!g.hasNode(e.from) || !g.hasNode(e.to)) return;
    const lw = e.label ? Math.ceil(textWidth(e.label)) + 8 : 0;
    g.setEdge(e.from, e.to, e.label ? { label: e.label, width: lw, height: 16, labelpos: "c" } : {}, `e${i}`);
  });
  dagre.layout(g);
  const { width: W, height: H } = g.graph();
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const lines = g.edges().map((ref) => {
    const e = g.edge(ref);
    const pts = e.points || [];
    if (pts.length < 2) return "";
    const d = `M${pts[0].x},${pts[0].y} ` + pts.slice(1).map((p) => `L${p.x},${p.y}`).join(" ");
    const label = e.label ? `<text class="edge-label" x="${e.x}" y="${e.y + 4}" text-anchor="middle">${esc(e.label)}</text>` : "";
    return `<path class="edge" d="${d}"/>${label}`;
  }).join("");
  const boxes = g.nodes().map((id) => {
    const n = byId.get(id), p = g.node(id);
    if (!n) return "";
    const x = p.x - p.width / 2, y = p.y - p.height / 2;
    const body = `<rect x="${x}" y="${y}" width="${p.width}" height="${p.height}" rx="6"${n.folded ? ' class="folded"' : ""}/>
      <text x="${x + 10}" y="${y + 18}">${esc(n.label)}</text>${n.sub ? `<text x="${x + 10}" y="${y + 35}" class="sub">${esc(n.sub)}</text>` : ""}`;
    return n.href
      ? `<a class="node" href="${esc(n.href)}" data-id="${esc(id)}" aria-label="${esc(n.label)} ${esc(n.sub || "")}">${body}</a>`
      : `<g class="node" data-id="${esc(id)}">${body}</g>`;
  }).join("");
  const view = Math.min(Math.max(H, 120), 520);
  box.classList.add("graph-view");
  box.style.height = `${view + 2}px`;
  box.innerHTML = `<div class="zoom-bar"><button type="button" class="secondary" data-zoom="in" aria-label="Zoom in">+</button><button type="button" class="secondary" data-zoom="out" aria-label="Zoom out">−</button><button type="button" class="secondary" data-zoom="fit">Fit</button><button type="button" class="secondary" data-zoom="1">1:1</button></div>
    <svg class="graph" role="img" aria-label="${esc(title)}" data-width="${Math.round(W)}" data-height="${Math.round(H)}">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">
    <path d="M0,0 L10,5 L0,10 z" class="arrow-head"/></marker></defs><g class="layer">${lines}${boxes}</g></svg>`;
  panZoom(box, box.querySelector("svg"), W, H);
}

/** Pan by dragging, zoom with the wheel around the cursor; scale 1 is natural size. */
function panZoom(box, svg, W, H) {
  let vb = { x: 0, y: 0, w: 0, h: 0 };
  const size = () => ({ w: svg.clientWidth || box.clientWidth || 600, h: svg.clientHeight || 300 });
  let scale = 1;
  const apply = () => {
    svg.setAttribute("viewBox", `${vb.x} ${vb.y} ${vb.w} ${vb.h}`);
    svg.dataset.scale = scale.toFixed(3);
  };
  const at = (s, cx, cy) => {
    const { w, h } = size();
    s = Math.min(4, Math.max(0.1, s));
    const fx = (cx - vb.x) / vb.w, fy = (cy - vb.y) / vb.h;
    vb = { w: w / s, h: h / s, x: cx - fx * (w / s), y: cy - fy * (h / s) };
    scale = s;
    apply();
  };
  const { w, h } = size();
  // Natural size, top left, centred vertically when it is shorter than the view.
  vb = { x: 0, y: H < h ? -(h - H) / 2 : 0, w, h };
  apply();
  svg.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = svg.getBoundingClientRect();
    const cx = vb.x + ((ev.clientX - r.left) / r.width) * vb.w, cy = vb.y + ((ev.clientY - r.top) / r.height) * vb.h;
    at(scale * Math.exp(-ev.deltaY * 0.0015), cx, cy);
  }, { passive: false });
  // A drag may start on a box (a link): it pans once the pointer moved a few pixels, and
  // the click that ends it then does not follow the link.
  let drag = null, moved = false;
  svg.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    drag = { x: ev.clientX, y: ev.clientY, vx: vb.x, vy: vb.y, id: ev.pointerId };
    moved = false;
  });
  svg.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    if (!moved && Math.hypot(ev.clientX - drag.x, ev.clientY - drag.y) < 4) return;
    if (!moved) { moved = true; svg.setPointerCapture(drag.id); svg.classList.add("dragging"); }
    const r = svg.getBoundingClientRect();
    vb.x = drag.vx - ((ev.clientX - drag.x) * vb.w) / r.width;
    vb.y = drag.vy - ((ev.clientY - drag.y) * vb.h) / r.height;
    apply();
  });
  const end = () => { drag = null; svg.classList.remove("dragging"); };
  svg.addEventListener("pointerup", end);
  svg.addEventListener("pointercancel", end);
  svg.addEventListener("click", (ev) => { if (moved) { ev.preventDefault(); moved = false; } }, true);
  box.querySelector(".zoom-bar").addEventListener("click", (ev) => {
    const z = ev.target.closest("button")?.dataset.zoom;
    if (!z) return;
    const c = [vb.x + vb.w / 2, vb.y + vb.h / 2];
    if (z === "in") at(scale * 1.25, ...c);
    else if (z === "out") at(scale / 1.25, ...c);
    else if (z === "1") { const s = size(); vb = { x: 0, y: 0, w: s.w, h: s.h }; scale = 1; apply(); }
    else {
      const s = size(), f = Math.min(s.w / W, s.h / H, 1);
      vb = { w: s.w / f, h: s.h / f, x: -(s.w / f - W) / 2, y: -(s.h / f - H) / 2 };
      scale = f; apply();
    }
  });
}
