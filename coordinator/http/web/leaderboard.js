// The leaderboard: volunteers by ledger credit.
import { el, fmt, getJSON, setText, short, showError } from "./common.js";

let cursor = 0;

async function more() {
  try {
    const page = await getJSON(`/v1/ledger/leaderboard?limit=50&cursor=${cursor}`);
    setText("as-of", `As of ledger entry ${fmt(page.as_of_entry)}; ${fmt(page.volunteers)} volunteers.`);
    const rows = page.leaderboard.map((r) =>
      el(
        "tr",
        {},
        el("td", { class: "num" }, r.rank),
        el("td", {}, el("a", { href: `/volunteers/${r.volunteer}`, class: "mono" }, short(r.volunteer, 16)), r.name ? ` ${r.name}` : ""),
        el("td", { class: "num credit" }, fmt(r.credit)),
        el("td", { class: "num" }, fmt(r.results_validated)),
        el("td", { class: "num hide-narrow" }, fmt(r.credits_revoked)),
      ),
    );
    document.getElementById("rows").append(...rows);
    cursor = page.next ?? cursor;
    document.getElementById("more").hidden = page.next === null;
  } catch (e) {
    showError("error", e);
  }
}

document.getElementById("more").addEventListener("click", more);
more();
