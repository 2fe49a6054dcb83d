// The ledger explorer: checkpoints, decoded entries, and verification in this browser.
import { el, fmt, getJSON, setText, short, showError, when } from "./common.js";
import {
  b64decode,
  latestVerifiedCheckpoint,
  parseNote,
  parseVkey,
  pinLogKey,
  pinnedLogKey,
  proveEntry,
  verifyCheckpoint,
} from "./verify.js";

const PAGE = 25;
const WITNESSES = "foldnet.witnessVkeys";
let logKey = null;
let witnessKeys = [];
let verified = null; // the latest checkpoint, verified: {size, root, ...}
let start = 0;
let treeSize = 0;

function status(id, ok, text) {
  const e = document.getElementById(id);
  e.textContent = text;
  e.className = `status ${ok === null ? "wait" : ok ? "ok" : "bad"}`;
  e.dataset.state = ok === null ? "pending" : ok ? "verified" : "failed";
}

async function loadWitnessKeys() {
  const lines = (localStorage.getItem(WITNESSES) || "").split("\n").filter((l) => l.trim());
  document.getElementById("witness-keys").value = lines.join("\n");
  witnessKeys = [];
  for (const l of lines) {
    try {
      witnessKeys.push(await parseVkey(l, 0x04));
    } catch (e) {
      showError("error", `witness key ${short(l, 30)}: ${e.message}`);
    }
  }
}

function summary(r) {
  const f = r.fields || {};
  const vol = (k) => el("a", { href: `/volunteers/${k}`, class: "mono" }, short(k, 16));
  switch (r.kind) {
    case "volunteer registered":
      return el("span", {}, "volunteer ", vol(f.volunteer_key), f.name ? ` “${f.name}”` : "", " registered");
    case "job submitted":
      return el("span", {}, `lab ${f.lab} submitted job `, el("code", {}, short(f.job_id, 16)));
    case "result validated":
      return el(
        "span",
        {},
        `WU `,
        el("code", {}, short(f.wu_id, 12)),
        ` (${f.engine}, ${fmt(f.n_particles)} particles, ${fmt(f.steps)} steps) validated by `,
        ...f.attestations.flatMap((a, i) => [i ? ", " : "", vol(a.volunteer_key)]),
      );
    case "credit granted":
      return el("span", {}, `${fmt(f.amount)} credit to `, vol(f.volunteer_key), ` for WU `, el("code", {}, short(f.wu_id, 12)));
    case "credit revoked":
      return el("span", {}, `${fmt(f.amount)} credit revoked from `, vol(f.volunteer_key), `: ${f.reason}`);
    case "checkpoint published":
      return el("span", {}, `checkpoint of size ${f.checkpoint ? fmt(f.checkpoint.size) : "?"} published`);
    case "witness cosignature recorded":
      return el("span", {}, `witness ${f.witness_name} cosigned size ${fmt(f.tree_size)}`);
    default:
      return el("span", { class: "status bad" }, `${r.kind}: ${r.error || ""}`);
  }
}

async function checkEntry(r, cell) {
  if (!verified) {
    cell.replaceChildren(el("span", { class: "status bad" }, "no verified checkpoint"));
    return false;
  }
  cell.replaceChildren(el("span", { class: "status wait" }, "checking…"));
  try {
    await proveEntry(r.index, b64decode(r.data), verified);
    cell.replaceChildren(el("span", { class: "status ok", "data-state": "verified" }, "verified"));
    return true;
  } catch (e) {
    cell.replaceChildren(el("span", { class: "status bad", "data-state": "failed", title: e.message }, `FAILED: ${e.message}`));
    return false;
  }
}

function entryRow(r) {
  const cell = el("td", {});
  cell.append(el("button", { class: "secondary", type: "button", onclick: () => checkEntry(r, cell) }, "verify"));
  const details = el("details", {}, el("summary", {}, summary(r)), el("pre", { class: "mono" }, JSON.stringify(r.fields, null, 1)));
  return el("tr", { "data-index": r.index }, el("td", { class: "num" }, r.index), el("td", { class: "hide-narrow muted" }, when(r.timestamp_ms)), el("td", {}, details), cell);
}

async function showEntries() {
  try {
    const page = await getJSON(`/v1/ledger/records?start=${start}&limit=${PAGE}`);
    treeSize = page.tree_size;
    document.getElementById("entries").replaceChildren(...page.records.map(entryRow));
    setText(
      "entries-range",
      `${fmt(page.start)}–${fmt(Math.max(page.start, page.end - 1))} of ${fmt(page.tree_size)} signed` +
        (page.pending ? ` (${fmt(page.pending)} newer entries await a checkpoint)` : ""),
    );
    document.getElementById("start").value = String(start);
  } catch (e) {
    showError("error", `entries: ${e.message}`);
  }
}

let cpAfter = null;
async function showCheckpoints(more = false) {
  try {
    const q = more && cpAfter !== null ? `?after=${cpAfter}&limit=20` : "?limit=20";
    const page = await getJSON(`/v1/ledger/checkpoints${q}`);
    const body = document.getElementById("checkpoints");
    if (!more) body.replaceChildren();
    for (const size of page.sizes) {
      const sigCell = el("td", {});
      const statCell = el("td", {});
      body.append(el("tr", {}, el("td", { class: "num" }, fmt(size)), sigCell, statCell));
      fetch(`/v1/ledger/checkpoints/${size}`, { cache: "no-store" })
        .then((r) => r.text())
        .then(async (text) => {
          try {
            const note = parseNote(text);
            sigCell.textContent = note.signatures.map((s) => s.name).join(", ");
            const cp = await verifyCheckpoint(text, logKey, witnessKeys);
            const cos = cp.cosignatures.length ? `; ${cp.cosignatures.length} cosignature(s)` : "";
            statCell.replaceChildren(el("span", { class: "status ok" }, `verified${cos}`));
          } catch (e) {
            statCell.replaceChildren(el("span", { class: "status bad" }, `FAILED: ${e.message}`));
          }
        });
    }
    cpAfter = page.next;
    document.getElementById("more-checkpoints").hidden = page.next === null;
  } catch (e) {
    showError("error", `checkpoints: ${e.message}`);
  }
}

async function verifyLatest() {
  status("cp-status", null, "checking…");
  status("proof-status", null, "checking…");
  verified = null;
  let text = "";
  try {
    const got = await latestVerifiedCheckpoint(logKey, witnessKeys);
    text = got.text;
    verified = got.cp;
    status("cp-status", true, "verified");
    setText("cp-size", fmt(verified.size));
    setText("cp-root", verified.rootB64);
    document.getElementById("cp-cosigs").replaceChildren(
      ...verified.cosignatures.map((c) =>
        el(
          "p",
          {},
          `witness ${c.name} (${c.keyId})` + (c.time !== null ? ` cosigned at ${when(Number(c.time) * 1000)}: ` : ": "),
          el(
            "span",
            { class: `status ${c.verified === null ? "wait" : c.verified ? "ok" : "bad"}` },
            c.verified === null ? "key not pinned" : c.verified ? "verified" : "FAILED",
          ),
        ),
      ),
    );
  } catch (e) {
    status("cp-status", false, `FAILED: ${e.message}`);
    status("proof-status", false, "FAILED: no verified checkpoint to check it against");
    try {
      text = text || (await (await fetch("/v1/ledger/checkpoint", { cache: "no-store" })).text());
    } catch {
      text = "";
    }
  }
  setText("cp-note", text);
  if (!verified) return;
  if (verified.size === 0n) {
    status("proof-status", null, "the tree is empty");
    return;
  }
  const index = verified.size - 1n;
  try {
    const page = await getJSON(`/v1/ledger/records?start=${index}&limit=1`);
    const r = page.records[0];
    if (!r || BigInt(r.index) !== index) throw new Error("the entry was not served");
    await proveEntry(index, b64decode(r.data), verified);
    status("proof-status", true, "verified");
    setText("proof-detail", `entry #${index} (${r.kind}) is in the signed tree`);
  } catch (e) {
    status("proof-status", false, `FAILED: ${e.message}`);
  }
}

async function init() {
  try {
    const pinned = await pinnedLogKey();
    logKey = pinned.key;
    document.getElementById("vkey").value = pinned.vkey;
    setText(
      "key-note",
      pinned.firstUse
        ? "Pinned on first use from this server: compare it with the key the operator publishes, or paste that one."
        : "Pinned in this browser: checkpoints signed by any other key fail.",
    );
  } catch (e) {
    showError("error", `log key: ${e.message}`);
    status("cp-status", false, `FAILED: ${e.message}`);
    status("proof-status", false, "FAILED: no log key");
    return;
  }
  await loadWitnessKeys();
  await verifyLatest();
  await Promise.all([showCheckpoints(), showEntries()]);
}

document.getElementById("key-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await parseVkey(document.getElementById("vkey").value);
    pinLogKey(document.getElementById("vkey").value);
    showError("error", null);
    await init();
  } catch (e) {
    showError("error", `that is not a log verifier key: ${e.message}`);
  }
});
document.getElementById("unpin").addEventListener("click", () => {
  pinLogKey(null);
  init();
});
document.getElementById("save-witnesses").addEventListener("click", async () => {
  localStorage.setItem(WITNESSES, document.getElementById("witness-keys").value);
  await loadWitnessKeys();
  await verifyLatest();
  await showCheckpoints();
});
document.getElementById("page-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  start = Math.max(0, Number(document.getElementById("start").value) || 0);
  showEntries();
});
document.getElementById("prev").addEventListener("click", () => {
  start = Math.max(0, start - PAGE);
  showEntries();
});
document.getElementById("next").addEventListener("click", () => {
  if (start + PAGE < treeSize) start += PAGE;
  showEntries();
});
document.getElementById("more-checkpoints").addEventListener("click", () => showCheckpoints(true));

init();
