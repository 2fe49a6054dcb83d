// The network page: polls /v1/network every 2 s and draws what it says.
import { chart, fmt, getJSON, setText, showError } from "./common.js";

const POLL_MS = 2000;

function draw(net) {
  setText("online", fmt(net.volunteers.online));
  setText("known", `of ${fmt(net.volunteers.known)}`);
  setText("in-flight", fmt(net.wus.in_flight));
  setText("validated-minute", fmt(net.validated.last_minute));
  setText("validated-total", fmt(net.validated.total));
  setText("jobs-running", fmt(net.jobs.running));
  setText("jobs-total", `of ${fmt(net.jobs.total)}`);
  setText("credit-total", fmt(net.ledger.credit_total));
  setText("ledger-size", fmt(net.ledger.size));
  setText(
    "ledger-kinds",
    Object.entries(net.ledger.entries_by_kind)
      .map(([k, n]) => `${fmt(n)} ${k}`)
      .join(", ") || "empty",
  );
  const cp = net.checkpoint;
  setText("cp-origin", cp ? cp.origin : "no checkpoint signed yet");
  setText("cp-size", cp ? fmt(cp.size) : "–");
  setText("cp-root", cp ? cp.root_hash : "–");
  setText("cp-note", cp ? cp.note : "");
  setText("updated", new Date(net.time * 1000).toLocaleTimeString());
  const now = net.time;
  const bars = net.validated.per_minute.map((m) => ({ x: (m.minute_ms / 1000 - now) / 60, y: m.validated }));
  const s = net.samples.filter((r) => now - r.t <= 1800);
  const top = Math.max(1, ...bars.map((b) => b.y));
  const peak = Math.max(1, ...s.map((r) => r.in_flight));
  chart(document.getElementById("chart"), {
    bars,
    series: [
      {
        name: "in flight",
        xs: s.map((r) => (r.t - now) / 60),
        ys: s.map((r) => (r.in_flight / peak) * top),
        color: "#dc2626",
      },
    ],
    xlabel: "minutes from now",
    ylabel: "per minute",
  });
  document.body.dataset.updated = String(net.time);
}

async function poll() {
  try {
    draw(await getJSON("/v1/network"));
    showError("error", null);
  } catch (e) {
    showError("error", `cannot read the network's numbers: ${e.message}`);
  }
  setTimeout(poll, POLL_MS);
}

poll();
