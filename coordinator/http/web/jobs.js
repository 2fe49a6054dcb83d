// The lab page: sign in with the API key, list the lab's jobs, submit one.
import { duration, el, fmt, showError, short } from "./common.js";
import { keyError, labJSON, labKey, setLabKey } from "./lab.js";

let cursor = 0;

function jobRow(j) {
  const pct = j.wus.total ? (100 * j.wus.validated) / j.wus.total : 0;
  return el(
    "tr",
    { "data-job": j.job },
    el("td", {}, el("a", { href: `/jobs/${j.job}` }, j.name || "unnamed job"), el("div", { class: "mono muted" }, short(j.job, 16))),
    el("td", {}, j.state),
    el("td", {}, el("div", { class: "bar-outer", title: `${pct.toFixed(0)}%` }, el("div", { class: "bar-inner", style: `width:${pct.toFixed(1)}%` }))),
    el("td", { class: "num hide-narrow" }, `${fmt(j.wus.validated)} / ${fmt(j.wus.total)}`),
    el("td", { class: "num" }, duration(j.eta_s)),
  );
}

async function list(more = false) {
  if (!labKey()) return;
  try {
    const page = await labJSON(`/v1/jobs?limit=20&cursor=${more ? cursor : 0}`);
    const body = document.getElementById("jobs");
    if (!more) body.replaceChildren();
    body.append(...page.jobs.map(jobRow));
    if (!page.jobs.length && !more) body.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no jobs yet")));
    cursor = page.next ?? cursor;
    document.getElementById("more").hidden = page.next === null;
    document.getElementById("jobs-panel").hidden = false;
    document.getElementById("submit-panel").hidden = false;
    showError("error", null);
  } catch (e) {
    document.getElementById("jobs-panel").hidden = true;
    document.getElementById("submit-panel").hidden = true;
    showError("error", keyError(e));
  }
}

document.getElementById("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  setLabKey(document.getElementById("api-key").value.trim());
  document.getElementById("api-key").value = "";
  list();
});
document.getElementById("sign-out").addEventListener("click", () => {
  setLabKey(null);
  location.reload();
});
document.getElementById("more").addEventListener("click", () => list(true));

document.getElementById("submit-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const out = document.getElementById("submit-result");
  const body = { engine: f.engine.value, name: f.name.value };
  for (const n of ["runs", "clones", "gens", "steps_per_wu", "segment_steps", "report_steps", "min_quorum", "seed"]) {
    body[n] = Number.parseInt(f[n].value, 10);
  }
  body.temperature = Number(f.temperature.value);
  body.deadline_s = Number(f.deadline_s.value);
  if (f.sequence.value) body.sequence = f.sequence.value;
  if (f.pdb.files.length) body.pdb = await f.pdb.files[0].text();
  try {
    const r = await labJSON("/v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    out.textContent = `submitted job ${r.job} (${fmt(r.wus_total)} work units)`;
    list();
  } catch (e) {
    out.textContent = `refused: ${keyError(e)}`;
  }
});

list();
setInterval(() => list(), 5000);
