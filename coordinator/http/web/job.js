// One job of the lab: progress, observables per trajectory, a 3-D viewer, cancel, download.
import { chart, color, duration, el, fmt, legend, setText, showError } from "./common.js";
import { auth, keyError, labJSON, labKey, setLabKey } from "./lab.js";

const job = decodeURIComponent(location.pathname.split("/").pop());
let viewer = null;
let shownStructure = null;

function webglAvailable() {
  try {
    const c = document.createElement("canvas");
    return Boolean(c.getContext("webgl2") || c.getContext("webgl"));
  } catch {
    return false;
  }
}

function load3Dmol() {
  if (globalThis.$3Dmol) return Promise.resolve(globalThis.$3Dmol);
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = "/static/vendor/3dmol/3Dmol-min.js";
    s.onload = () => resolve(globalThis.$3Dmol);
    s.onerror = () => reject(new Error("the 3-D viewer could not be loaded"));
    document.head.append(s);
  });
}

async function pdbText(which) {
  const [kind, run, clone] = which.split(":");
  const q = kind === "best" ? "which=best" : `which=${kind}&run=${run}&clone=${clone}`;
  const r = await fetch(`/v1/jobs/${encodeURIComponent(job)}/structure?${q}`, { headers: auth(), cache: "no-store" });
  if (!r.ok) {
    const b = await r.json().catch(() => ({}));
    throw new Error(b.detail || `HTTP ${r.status}`);
  }
  return r.text();
}

async function showStructure(which) {
  const note = document.getElementById("viewer-note");
  const pre = document.getElementById("pdb-text");
  let text;
  try {
    text = await pdbText(which);
  } catch (e) {
    note.textContent = `no structure yet: ${e.message}`;
    return;
  }
  shownStructure = which;
  pre.textContent = text;
  if (!webglAvailable()) {
    document.getElementById("viewer").hidden = true;
    pre.hidden = false;
    note.textContent = "This browser has no WebGL, so the 3-D viewer is off; the structure is shown as PDB text.";
    return;
  }
  try {
    const mol = await load3Dmol();
    if (!viewer) viewer = mol.createViewer(document.getElementById("viewer"), { backgroundColor: "white" });
    viewer.clear();
    const animated = which.startsWith("trajectory:");
    const model = animated ? viewer.addModelsAsFrames(text, "pdb") : viewer.addModel(text, "pdb");
    const atoms = model.selectedAtoms({});
    if (atoms.every((a) => a.atom === "CA")) {
      // a C-alpha (Go) model: a trace through the residues and a bead per residue
      viewer.setStyle({}, { cartoon: { style: "trace", color: "spectrum", thickness: 0.6 }, sphere: { radius: 1.1, colorscheme: { prop: "resi", gradient: "roygb", min: 1, max: atoms.length } } });
    } else {
      viewer.setStyle({}, { cartoon: { color: "spectrum" } });
      viewer.addStyle({ hetflag: true }, { stick: {} });
    }
    viewer.zoomTo();
    viewer.render();
    if (animated) viewer.animate({ loop: "forward", interval: 120 });
    else viewer.stopAnimate();
    note.textContent = (text.split("\n").find((l) => l.startsWith("REMARK")) || "").replace(/^REMARK\s+\d*\s*/, "");
    document.getElementById("viewer").dataset.rendered = "1";
  } catch (e) {
    pre.hidden = false;
    note.textContent = `3-D viewer unavailable (${e.message}); the structure is shown as PDB text.`;
  }
}

async function progress() {
  const p = await labJSON(`/v1/jobs/${encodeURIComponent(job)}`);
  setText("name", p.name || "");
  setText("job-id", p.job);
  const st = document.getElementById("state");
  st.textContent = p.state;
  st.className = `status ${p.state === "completed" ? "ok" : p.state === "running" ? "wait" : "bad"}`;
  setText("progress", `${fmt(p.wus.validated)} / ${fmt(p.wus.total)}`);
  setText("counts", `(${fmt(p.wus.queued)} queued, ${fmt(p.wus.results_returned)} results returned)`);
  setText("in-flight", fmt(p.wus.in_flight));
  setText("failed", fmt(p.wus.failed));
  setText("eta", p.state === "running" ? duration(p.eta_s) : "–");
  setText("steps", fmt(p.steps_simulated));
  document.getElementById("cancel").disabled = p.state !== "running";
  return p;
}

async function series() {
  const trajs = [];
  let cursor = 0;
  for (let i = 0; i < 3; i++) {
    const page = await labJSON(`/v1/jobs/${encodeURIComponent(job)}/series?limit=8&cursor=${cursor}`);
    trajs.push(...page.trajectories);
    if (page.next === null) break;
    cursor = page.next;
  }
  const named = trajs.map((t, i) => ({ ...t, name: `run ${t.run} clone ${t.clone}`, color: color(i) }));
  legend(document.getElementById("legend"), named);
  for (const obs of ["q", "rmsd", "energy"]) {
    chart(document.getElementById(`chart-${obs}`), {
      series: named.filter((t) => t.observables[obs]).map((t) => ({ name: t.name, xs: t.steps, ys: t.observables[obs], color: t.color })),
      xlabel: "step",
    });
  }
  const sel = document.getElementById("which");
  const have = new Set(Array.from(sel.options, (o) => o.value));
  for (const t of trajs) {
    const v = `current:${t.run}:${t.clone}`;
    if (t.generations && !have.has(v)) {
      sel.append(el("option", { value: v }, `current state of run ${t.run} clone ${t.clone} (gen ${t.generations - 1})`));
      sel.append(el("option", { value: `trajectory:${t.run}:${t.clone}` }, `trajectory of run ${t.run} clone ${t.clone} (animated)`));
    }
  }
}

async function refresh(first = false) {
  try {
    const p = await progress();
    document.getElementById("login").hidden = true;
    document.getElementById("body").hidden = false;
    showError("error", null);
    await series();
    if (first || (p.state === "running" && shownStructure === "best")) await showStructure(document.getElementById("which").value);
  } catch (e) {
    if (e.status === 401 || e.status === 403) document.getElementById("login").hidden = false;
    showError("error", keyError(e));
  }
}

document.getElementById("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  setLabKey(document.getElementById("api-key").value.trim());
  document.getElementById("api-key").value = "";
  refresh(true);
});
document.getElementById("which").addEventListener("change", (ev) => showStructure(ev.target.value));
document.getElementById("cancel").addEventListener("click", async () => {
  if (!confirm("Cancel this job? Nothing more is handed out; validated work is kept.")) return;
  try {
    await labJSON(`/v1/jobs/${encodeURIComponent(job)}/cancel`, { method: "POST" });
    setText("action-result", "cancelled");
    progress();
  } catch (e) {
    setText("action-result", `refused: ${keyError(e)}`);
  }
});
async function download(url, name) {
  const r = await fetch(url, { headers: auth() });
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    throw new Error(body.detail ? `${body.detail} (HTTP ${r.status})` : `HTTP ${r.status}`);
  }
  const a = el("a", { href: URL.createObjectURL(await r.blob()), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}
document.getElementById("download").addEventListener("click", () =>
  download(`/v1/jobs/${encodeURIComponent(job)}/results`, `${job.slice(0, 16)}-results.zip`).catch((e) => setText("action-result", e.message)),
);
document.getElementById("analysis").addEventListener("click", () => {
  setText("action-result", "building the Markov state model...");
  download(`/v1/jobs/${encodeURIComponent(job)}/analysis`, `${job.slice(0, 16)}-analysis.zip`)
    .then(() => setText("action-result", ""))
    .catch((e) => setText("action-result", e.message));
});
document.getElementById("pdb-link").addEventListener("click", () => {
  const blob = new Blob([document.getElementById("pdb-text").textContent], { type: "chemical/x-pdb" });
  const a = el("a", { href: URL.createObjectURL(blob), download: `${job.slice(0, 16)}.pdb` });
  document.body.append(a);
  a.click();
  a.remove();
});

window.addEventListener("resize", () => {
  if (!viewer) return;
  viewer.resize();
  viewer.zoomTo();
  viewer.render();
});

if (labKey()) refresh(true);
else document.getElementById("login").hidden = false;
setInterval(() => labKey() && refresh(), 5000);
