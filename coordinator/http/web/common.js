// Helpers shared by the dashboard's pages: JSON requests, DOM building, small SVG charts.

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

export async function getJSON(url, options = {}) {
  const r = await fetch(url, { cache: "no-store", ...options });
  let body = null;
  try {
    body = await r.json();
  } catch {
    body = null;
  }
  if (!r.ok) {
    throw new ApiError(r.status, body && body.error, body && body.detail);
  }
  return body;
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

export function setText(id, value) {
  const e = document.getElementById(id);
  if (e) e.textContent = value;
}

export function fmt(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US");
}

export function short(h, n = 12) {
  return h && h.length > n ? `${h.slice(0, n)}…` : h || "";
}

export function when(ms) {
  if (!ms) return "–";
  return new Date(Number(ms)).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

export function duration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.round(s);
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function showError(where, err) {
  const e = typeof where === "string" ? document.getElementById(where) : where;
  if (!e) return;
  e.hidden = !err;
  e.textContent = err ? String(err.message || err) : "";
}

const SVG = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];

export function color(i) {
  return COLORS[i % COLORS.length];
}

function ticks(lo, hi) {
  if (hi === lo) return [lo];
  return [lo, (lo + hi) / 2, hi];
}

function label(v) {
  const a = Math.abs(v);
  if (a >= 1e4 || (a > 0 && a < 1e-2)) return v.toExponential(1);
  return Number(v.toFixed(a < 10 ? 2 : 0)).toString();
}

// Charts are drawn in the element's own pixels: redraw one when its width changes.
const watched = new WeakSet();
const resized =
  typeof ResizeObserver === "undefined"
    ? null
    : new ResizeObserver((entries) => {
        for (const e of entries) {
          const last = e.target.lastChart;
          if (last && Math.abs(e.contentRect.width - last.width) > 2) chart(e.target, last.options);
        }
      });

// Line chart in an <svg>: series = [{name, xs, ys, color}]; bars = [{x, y}] drawn behind.
export function chart(svg, options = {}) {
  const { series = [], bars = null, ylabel = "", xlabel = "" } = options;
  svg.lastChart = { options, width: svg.getBoundingClientRect().width };
  if (resized && !watched.has(svg)) {
    watched.add(svg);
    resized.observe(svg);
  }
  // the viewBox is the element's own size in CSS pixels, so text is never stretched
  const W = Math.max(260, Math.round(svg.getBoundingClientRect().width) || 600);
  const H = Math.max(160, Math.round(svg.getBoundingClientRect().height) || 220);
  const L = 52;
  const R = 22;
  const T = 12;
  const B = 34;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const xs = [];
  const ys = [];
  for (const s of series) {
    xs.push(...s.xs);
    ys.push(...s.ys.filter((y) => Number.isFinite(y)));
  }
  if (bars) {
    xs.push(...bars.map((b) => b.x));
    ys.push(0, ...bars.map((b) => b.y));
  }
  if (!xs.length) {
    const t = svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" });
    t.textContent = "no data yet";
    svg.append(t);
    return;
  }
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) {
    y1 = y0 + 1;
  }
  const px = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const py = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  svg.append(svgEl("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "plot" }));
  for (const v of ticks(y0, y1)) {
    svg.append(svgEl("line", { x1: L, x2: W - R, y1: py(v), y2: py(v), class: "grid" }));
    const t = svgEl("text", { x: L - 4, y: py(v) + 4, "text-anchor": "end", class: "tick" });
    t.textContent = label(v);
    svg.append(t);
  }
  for (const v of ticks(x0, x1)) {
    const t = svgEl("text", { x: px(v), y: H - B + 14, "text-anchor": "middle", class: "tick" });
    t.textContent = label(v);
    svg.append(t);
  }
  if (xlabel) {
    const t = svgEl("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", class: "axis" });
    t.textContent = xlabel;
    svg.append(t);
  }
  if (ylabel) {
    const t = svgEl("text", { x: 12, y: T + (H - T - B) / 2, class: "axis", transform: `rotate(-90 12 ${T + (H - T - B) / 2})`, "text-anchor": "middle" });
    t.textContent = ylabel;
    svg.append(t);
  }
  if (bars && bars.length) {
    const w = Math.max(2, ((W - L - R) / Math.max(bars.length, 1)) * 0.8);
    for (const b of bars) {
      svg.append(svgEl("rect", { x: px(b.x) - w / 2, y: py(b.y), width: w, height: Math.max(0, py(y0 < 0 ? 0 : y0) - py(b.y)), class: "bar" }));
    }
  }
  series.forEach((s, i) => {
    const pts = s.xs
      .map((x, j) => [x, s.ys[j]])
      .filter(([, y]) => Number.isFinite(y))
      .map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`);
    if (!pts.length) return;
    svg.append(svgEl("polyline", { points: pts.join(" "), fill: "none", stroke: s.color || color(i), "stroke-width": 1.6, "vector-effect": "non-scaling-stroke" }));
  });
}

export function legend(container, series) {
  container.replaceChildren(
    ...series.map((s, i) =>
      el("span", { class: "key" }, el("i", { style: `background:${s.color || color(i)}` }), s.name),
    ),
  );
}
