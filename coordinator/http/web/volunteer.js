// One volunteer: its ledger numbers, credit over time, and its entries' inclusion proofs.
import { chart, el, fmt, getJSON, setText, showError, when } from "./common.js";
import { b64decode, latestVerifiedCheckpoint, pinnedLogKey, proveEntry } from "./verify.js";

const key = location.pathname.split("/").pop();
let cursor = 0;
let verified = null;

async function numbers() {
  const v = await getJSON(`/v1/ledger/volunteers/${key}`);
  setText("key", key);
  setText("name", v.name ? `“${v.name}”` : "");
  document.title = `Volunteer ${v.name || key.slice(0, 12)} · foldnet`;
  setText("credit", fmt(v.credit));
  setText("validated", fmt(v.results_validated));
  setText("returned", fmt(v.work.results_returned));
  setText("rejected", fmt(v.work.results_rejected));
  setText("revoked", fmt(v.credits_revoked));
  setText("standing", v.work.trust || "–");
  setText("online", v.work.online ? "· online" : "");
  const s = v.credit_series;
  const t0 = s.length ? s[0].time_ms : 0;
  const xs = [];
  const ys = [];
  s.forEach((p, i) => {
    const x = (p.time_ms - t0) / 60000;
    if (i) {
      xs.push(x); // a balance changes only at an entry: draw it as steps
      ys.push(s[i - 1].credit);
    }
    xs.push(x);
    ys.push(p.credit);
  });
  chart(document.getElementById("chart"), {
    series: [{ name: "credit", xs, ys }],
    xlabel: "minutes since its first grant",
    ylabel: "credit",
  });
}

async function check(r, cell) {
  try {
    if (!verified) throw new Error("no verified checkpoint");
    await proveEntry(r.index, b64decode(r.data), verified);
    cell.replaceChildren(el("span", { class: "status ok", "data-state": "verified" }, "verified"));
  } catch (e) {
    cell.replaceChildren(el("span", { class: "status bad", "data-state": "failed" }, `FAILED: ${e.message}`));
  }
}

async function entries() {
  const page = await getJSON(`/v1/ledger/volunteers/${key}/entries?limit=20&cursor=${cursor}`);
  setText("pending", page.pending ? `${fmt(page.pending)} newer entries await a checkpoint` : "");
  for (const r of page.records) {
    const cell = el("td", {}, el("span", { class: "status wait" }, "checking…"));
    const f = r.fields || {};
    const what = r.kind + (f.amount !== undefined ? ` ${fmt(f.amount)}` : "");
    document.getElementById("entries").append(
      el("tr", {}, el("td", { class: "num" }, r.index), el("td", { class: "hide-narrow muted" }, when(r.timestamp_ms)), el("td", {}, what), cell),
    );
    check(r, cell);
  }
  cursor = page.next ?? cursor;
  document.getElementById("more").hidden = page.next === null;
}

async function init() {
  try {
    await numbers();
  } catch (e) {
    showError("error", e);
    return;
  }
  const st = document.getElementById("cp-status");
  try {
    const { key: logKey } = await pinnedLogKey();
    verified = (await latestVerifiedCheckpoint(logKey)).cp;
    st.textContent = `checkpoint of size ${fmt(verified.size)} verified`;
    st.className = "status ok";
  } catch (e) {
    st.textContent = `FAILED: ${e.message}`;
    st.className = "status bad";
  }
  try {
    await entries();
  } catch (e) {
    showError("error", e);
  }
}

document.getElementById("more").addEventListener("click", () => entries().catch((e) => showError("error", e)));
init();
setInterval(() => numbers().catch(() => {}), 5000);
