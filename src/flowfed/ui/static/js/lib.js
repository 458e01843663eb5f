// The vendored libraries (static/vendor/), loaded the first time a page draws a chart or a
// graph: the first paint of every page needs neither.
const pending = new Map();

function load(tag, attrs) {
  const key = attrs.src || attrs.href;
  if (!pending.has(key)) {
    pending.set(key, new Promise((ok, fail) => {
      const el = Object.assign(document.createElement(tag), attrs);
      el.onload = () => ok();
      el.onerror = () => fail(new Error(`could not load ${key}`));
      document.head.append(el);
    }));
  }
  return pending.get(key);
}

/** uPlot (curves with hover values): resolves to the uPlot constructor. */
export const uPlotLib = () => Promise.all([
  load("script", { src: "/ui/vendor/uPlot.iife.min.js" }),
  load("link", { rel: "stylesheet", href: "/ui/vendor/uPlot.min.css" }),
]).then(() => window.uPlot);

/** dagre (layered graph layout): resolves to the dagre namespace. */
export const dagreLib = () => load("script", { src: "/ui/vendor/dagre.min.js" }).then(() => window.dagre);
